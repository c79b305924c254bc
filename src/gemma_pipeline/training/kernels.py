"""Fused GPU kernels for the packed recipe: Liger's RMSNorm, GeGLU MLP and RoPE.

Gemma-2 runs four RMSNorms and a tanh-GeLU gate per layer, each a chain of float32 elementwise
kernels over every token; under gradient checkpointing they run three times a step. Liger fuses
each into one Triton kernel (same maths: Gemma's ``1 + weight`` scaling in float32, tanh GeLU).
The attention (and its softcapping) and the LM head are left as they are.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

_PATCHES = {
    "gemma2": "apply_liger_kernel_to_gemma2",
    "gemma3_text": "apply_liger_kernel_to_gemma3_text",
}


def apply_fused_kernels(model: Any) -> bool:
    """Patch ``model`` (a loaded Gemma-2/3 causal LM) in place; False where not possible."""
    model_type = model.config.get_text_config().model_type
    if model_type not in _PATCHES:
        logger.info("no fused kernels for model type %s", model_type)
        return False
    try:
        import liger_kernel.transformers as liger
    except ImportError:
        logger.warning("liger-kernel is not installed (pip install -e '.[gpu]'): unfused kernels")
        return False
    getattr(liger, _PATCHES[model_type])(
        rope=True,
        rms_norm=True,
        geglu=True,
        cross_entropy=False,  # the loss projects only labelled positions itself
        fused_linear_cross_entropy=False,
        model=model,
    )
    logger.info("Liger kernels: RMSNorm, GeGLU and RoPE fused")
    return True
