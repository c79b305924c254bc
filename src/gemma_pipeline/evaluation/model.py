"""The model under evaluation: the base as it was trained on, and the adapter on top of it."""

from __future__ import annotations

from typing import Any

from peft import PeftModel

from gemma_pipeline.config import ModelParams, QuantizationParams
from gemma_pipeline.modeling import load_causal_lm, load_tokenizer
from gemma_pipeline.training.recipe import get_quantization_config, training_device


def load_base_for_evaluation(
    model_params: ModelParams, quantization: QuantizationParams
) -> tuple[Any, Any]:
    """Base model and tokenizer, quantized exactly as for training, in eval mode."""
    device = training_device()
    tokenizer = load_tokenizer(
        model_params.name_or_path,
        embedded_cache_dir=model_params.embedded_cache_dir,
        revision=model_params.revision,
    )
    model = load_causal_lm(
        model_params.name_or_path,
        embedded_cache_dir=model_params.embedded_cache_dir,
        dtype=model_params.dtype,
        attn_implementation=model_params.attn_implementation,
        revision=model_params.revision,
        quantization_config=get_quantization_config(quantization),
        device_map={"": 0} if device == "cuda" else None,
    )
    return model.eval(), tokenizer


def attach_adapter(model: Any, adapter_path: str) -> PeftModel:
    """Base + LoRA adapter (weights from safetensors), not merged, in eval mode."""
    return PeftModel.from_pretrained(model, adapter_path, is_trainable=False).eval()
