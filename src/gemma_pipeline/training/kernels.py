"""GPU kernels for the packed recipe: flex attention, and Liger's RMSNorm, GeGLU and RoPE.

Flex attention computes only the blocks inside each packed example (transformers builds its
block mask from the restarting ``position_ids``) and applies Gemma-2's attention softcap in the
kernel, instead of a dense float32 score matrix per row. Gemma-2 also runs four RMSNorms and a
tanh-GeLU gate per layer, each a chain of float32 elementwise kernels over every token, three
times a step under gradient checkpointing; Liger fuses each into one Triton kernel (same maths:
Gemma's ``1 + weight`` scaling in float32, tanh GeLU). The LM head is left to the loss.
Which devices get them is chosen in ``gemma_pipeline.modeling.capability``.
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


def allow_shape_changes() -> None:
    """Packed batches change shape every step; let compiled flex attention follow them.

    The default limit (8 compilations per function) is reached within a few steps, after which
    torch falls back to flex attention's slow reference path.
    """
    import torch

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)


def keep_norms_in_float32(model: Any) -> int:
    """Under fp16 autocast, make every RMSNorm return float32; the number of norms changed.

    Gemma's norms compute in float32 but hand back their input's dtype. After a projection that
    input is fp16, so a post-norm output past 65504 (Gemma-2 scales them up) would become inf
    before it reaches the float32 residual stream. Given a float32 input they return float32,
    and the residual add stays float32; the next projection is fp16 again under autocast.
    """
    import torch

    def to_float32(module: Any, args: tuple) -> tuple:
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    for norm in norms:
        norm.register_forward_pre_hook(to_float32)
    return len(norms)
