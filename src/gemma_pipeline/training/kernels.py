"""GPU kernels for the packed recipe: flex attention, and Liger's RMSNorm, GeGLU and RoPE.

Flex attention computes only the blocks inside each packed example (transformers builds its
block mask from the restarting ``position_ids``) and applies Gemma-2's attention softcap in the
kernel, instead of a dense float32 score matrix per row. Gemma-2 also runs four RMSNorms and a
tanh-GeLU gate per layer, each a chain of float32 elementwise kernels over every token, three
times a step under gradient checkpointing; Liger fuses each into one Triton kernel (same maths:
Gemma's ``1 + weight`` scaling in float32, tanh GeLU). The LM head is left to the loss.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

#: The attention the packed recipe trains with, by device. On the CPU eager, whatever the model
#: section says: SDPA with packed rows' block-diagonal masks was no faster (1.59 s a demo step
#: against 1.55, 2 cores), and the demo's gains were measured with eager.
PACKED_ATTENTION = {"cuda": "flex_attention", "cpu": "eager"}

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


def allow_shape_changes() -> None:
    """Packed batches change shape every step; let compiled flex attention follow them.

    The default limit (8 compilations per function) is reached within a few steps, after which
    torch falls back to flex attention's slow reference path.
    """
    import torch

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
