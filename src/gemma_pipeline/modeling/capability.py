"""What the training device can run, checked once: mixed precision, 4-bit compute dtype,
attention and fused kernels for a run, chosen from the device and logged with the reason.

device                     mixed precision  4-bit compute  unquantized weights  packed recipe
CUDA >= 8.0 (A100, H100)   bf16             bfloat16       ``model.dtype``      flex_attention, on
CUDA < 8.0 (T4, V100)      fp16 + scaling   float16        float32              eager, off
CPU                        none             bfloat16       ``model.dtype``      eager, off

Below 8.0 there are no bf16 tensor cores (``torch.cuda.is_bf16_supported()`` says True there
anyway: it counts emulation), and flex attention's and Liger's Triton kernels are built and
measured for Ampere and newer. Eager attention keeps Gemma-2's softcaps (sdpa drops them) and
still never attends across packed rows (its mask comes from the restarting ``position_ids``).
fp16 overflows where Gemma-2's residual stream grows past 65504, so under fp16 the unquantized
weights (embeddings = tied LM head, norms) stay float32: the residual stream, the norms and the
softcaps then run in float32 and only the matmuls in fp16 (tests/modeling/test_capability.py).

``bf16``, ``fp16`` and ``quantization.compute_dtype`` default to ``auto``; an explicit value
wins, and one the device cannot run fails before the model loads, naming the key and device.
``GEMMA_PIPELINE_DEVICE_CAPABILITY=7.5`` makes a newer GPU choose as a T4 would (benchmarks).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from gemma_pipeline.config import ModelParams, ParameterError, TrainQloraParams

logger = logging.getLogger(__name__)

#: Forces the compute capability the choice is made for, e.g. "7.5" on an H200.
CAPABILITY_OVERRIDE = "GEMMA_PIPELINE_DEVICE_CAPABILITY"
#: bf16 tensor cores, flex attention and Liger's kernels: Ampere (8.0) and newer.
AMPERE = (8, 0)


@dataclass(frozen=True)
class Device:
    """The device a run trains on, as far as the recipe cares."""

    kind: str  # "cuda" or "cpu"
    name: str
    capability: tuple[int, int] | None = None  # CUDA compute capability
    bf16: bool = False  # native bf16 tensor cores (CUDA only)

    @property
    def label(self) -> str:
        if self.capability is None:
            return self.name
        return f"{self.name} (compute capability {self.capability[0]}.{self.capability[1]})"

    @property
    def ampere_or_newer(self) -> bool:
        return self.capability is not None and self.capability >= AMPERE


def probe_device() -> Device:
    """The device ``compute_device()`` trains on, with ``GEMMA_PIPELINE_DEVICE_CAPABILITY``
    applied."""
    if not torch.cuda.is_available():
        return Device("cpu", "CPU")
    capability = tuple(torch.cuda.get_device_capability(0))
    name = torch.cuda.get_device_name(0)
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    forced = os.environ.get(CAPABILITY_OVERRIDE)
    if forced:
        try:
            major, minor = (int(part) for part in forced.split("."))
        except ValueError:
            raise ValueError(
                f"{CAPABILITY_OVERRIDE}={forced!r}: expected MAJOR.MINOR, e.g. 7.5"
            ) from None
        name = f"{name} treated as {forced} ({CAPABILITY_OVERRIDE})"
        capability = (major, minor)
    return Device("cuda", name, capability, bf16 and capability >= AMPERE)


def packed_attention(device: Device) -> str:
    """The attention the packed recipe trains with. On the CPU eager, whatever the model
    section says: SDPA with packed rows' block-diagonal masks was no faster (1.59 s a demo step
    against 1.55, 2 cores), and the demo's gains were measured with eager."""
    return "flex_attention" if device.ampere_or_newer else "eager"


def compute_dtype_for(device: Device) -> str:
    """The 4-bit layers' compute dtype ``auto`` means on ``device``."""
    return "float16" if device.kind == "cuda" and not device.bf16 else "bfloat16"


@dataclass(frozen=True)
class TrainingSetup:
    """Parameters with every ``auto`` resolved, and the kernels to use, for one device."""

    device: Device
    params: TrainQloraParams
    model_params: ModelParams
    flex_attention: bool
    fused_kernels: bool
    reasons: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "device_name": self.device.label,
            "bf16": self.params.bf16,
            "fp16": self.params.fp16,
            "weights_dtype": self.model_params.dtype,
            "reasons": self.reasons,
        }


def choose_training_setup(
    params: TrainQloraParams, model_params: ModelParams, device: Device
) -> TrainingSetup:
    """Resolve ``auto`` for ``device``; refuse explicit values it cannot run (ParameterError)."""
    on_cuda = device.kind == "cuda"
    reasons: list[str] = []

    def refuse(key: str, value: Any, why: str) -> None:
        raise ParameterError(f"train_qlora.{key}: {value} cannot run on {device.label}: {why}")

    if (params.bf16 is True or params.fp16 is True) and not on_cuda:
        key = "bf16" if params.bf16 is True else "fp16"
        refuse(key, "true", "mixed precision is CUDA's; the CPU trains in model.dtype (auto)")
    if params.bf16 is True and not device.bf16:
        refuse("bf16", "true", "no bf16 tensor cores; set fp16: true or bf16: auto")
    quantization = params.quantization
    bf16_compute = quantization.load_in_4bit and quantization.compute_dtype == "bfloat16"
    if bf16_compute and on_cuda and not device.bf16:
        refuse("quantization.compute_dtype", "bfloat16", "no bf16 tensor cores; use float16")

    fp16 = params.fp16
    if fp16 == "auto":
        fp16 = on_cuda and not device.bf16 and params.bf16 is not True
    bf16 = params.bf16
    if bf16 == "auto":
        bf16 = device.bf16 and not fp16
    if on_cuda and params.fp16 == "auto" and fp16:
        reasons.append("fp16 mixed precision with loss scaling: no bf16 tensor cores")
    compute_dtype = quantization.compute_dtype
    if compute_dtype == "auto":
        compute_dtype = "float16" if fp16 else compute_dtype_for(device)
    weights_dtype = model_params.dtype
    if fp16 and weights_dtype != "float32":
        # An fp16 residual stream overflows in Gemma-2 (tests/training/test_fp16.py); with
        # float32 weights it stays float32 and autocast runs only the matmuls in fp16.
        reasons.append(f"unquantized weights in float32, not {weights_dtype}: fp16 overflows")
        weights_dtype = "float32"

    packed = params.recipe == "packed"
    flex = packed and packed_attention(device) == "flex_attention"
    fused = packed and device.ampere_or_newer
    if packed and on_cuda and not device.ampere_or_newer:
        reasons.append(
            "eager attention (softcaps kept, no attention across packed rows) and no Liger "
            "kernels: their Triton kernels are built for compute capability 8.0 and newer"
        )
    attention = model_params.attn_implementation
    if packed:
        attention = packed_attention(device)

    resolved = params.model_copy(
        update={
            "bf16": bf16,
            "fp16": fp16,
            "quantization": quantization.model_copy(update={"compute_dtype": compute_dtype}),
        }
    )
    resolved_model = model_params.model_copy(
        update={"dtype": weights_dtype, "attn_implementation": attention}
    )
    setup = TrainingSetup(device, resolved, resolved_model, flex, fused, reasons)
    logger.info(
        "Training on %s: %s, 4-bit compute %s, weights %s, attention %s, fused kernels %s%s",
        device.label,
        "bf16" if bf16 else "fp16" if fp16 else "no mixed precision",
        compute_dtype,
        weights_dtype,
        attention,
        "on" if fused else "off",
        "".join(f"; {reason}" for reason in reasons),
    )
    return setup
