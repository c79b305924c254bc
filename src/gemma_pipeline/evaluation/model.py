"""The model under evaluation: the base as it was trained on, and the adapter on top of it."""

from __future__ import annotations

from typing import Any

from peft import PeftModel

from gemma_pipeline.config import ModelParams, QuantizationParams
from gemma_pipeline.modeling.from_params import model_from_params, tokenizer_from_params
from gemma_pipeline.modeling.quantization import get_quantization_config


def load_base_for_evaluation(
    model_params: ModelParams, quantization: QuantizationParams
) -> tuple[Any, Any]:
    """Base model and tokenizer, quantized exactly as for training, in eval mode."""
    tokenizer = tokenizer_from_params(model_params)
    model = model_from_params(model_params, get_quantization_config(quantization))
    return model.eval(), tokenizer


def attach_adapter(model: Any, adapter_path: str) -> PeftModel:
    """Base + LoRA adapter (weights from safetensors), not merged, in eval mode."""
    return PeftModel.from_pretrained(model, adapter_path, is_trainable=False).eval()
