"""The base model's 4-bit quantization: one config for training and for evaluation.

Evaluation scores the base on the same (possibly 4-bit) weights the adapter was trained on, so
both stages build their ``BitsAndBytesConfig`` here, from the ``train_qlora.quantization``
parameters.
"""

from __future__ import annotations

import logging
from functools import cache

import torch
from transformers import BitsAndBytesConfig

from gemma_pipeline.config import QuantizationParams
from gemma_pipeline.modeling.capability import compute_dtype_for, probe_device
from gemma_pipeline.modeling.loading import parse_dtype

logger = logging.getLogger(__name__)


def compute_device() -> str:
    """Where models are trained and scored: the GPU when there is one (whole, not sharded)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@cache
def bnb_4bit_works_on(device: str) -> bool:
    """Whether bitsandbytes can run a 4-bit NF4 matmul forward and backward on ``device``."""
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(16, 16, compute_dtype=torch.float32, quant_type="nf4")
        layer = layer.to(device)
        inputs = torch.randn(2, 16, device=device, requires_grad=True)
        layer(inputs).sum().backward()
        return bool(torch.isfinite(inputs.grad).all())
    except Exception as error:  # any failure means "not supported here"
        logger.debug("bitsandbytes 4-bit unavailable on %s: %s", device, error)
        return False


def get_quantization_config(params: QuantizationParams) -> BitsAndBytesConfig | None:
    """4-bit NF4 config, or None (unquantized LoRA) where bitsandbytes cannot run it."""
    if not params.load_in_4bit:
        return None
    device = compute_device()
    if not bnb_4bit_works_on(device):
        logger.warning(
            "bitsandbytes cannot run 4-bit layers on %s: training LoRA on the unquantized model",
            device,
        )
        return None
    compute_dtype = params.compute_dtype
    if compute_dtype == "auto":  # evaluation; training passes it resolved
        compute_dtype = compute_dtype_for(probe_device())
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=params.quant_type,
        bnb_4bit_use_double_quant=params.double_quant,
        bnb_4bit_compute_dtype=parse_dtype(compute_dtype),
    )
