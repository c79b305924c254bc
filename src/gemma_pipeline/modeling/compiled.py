"""``torch.compile`` of a model's decoder layers, shared by training and evaluation.

Eager Gemma-2 runs each RMSNorm, the tanh-GeLU gate, RoPE (a ``cat`` per call), the residual
adds and the float32 attention scores as separate elementwise kernels over every token: on the
H200 they were 55% of MMLU's device time against 40% for the matrix products
(docs/benchmarks.md). Compiling each layer's ``forward`` fuses those chains. Shapes are
dynamic (every batch has its own width), so one compilation serves every batch; the layers
share it, since their ``forward`` is the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from .heads import backbone_of

#: Compilations per function before torch falls back to eager: batches differ in shape, and
#: attention variants (prefix or not, sliding or not) each need their own graph.
RECOMPILE_LIMIT = 64


def _layers(model: PreTrainedModel | PeftModel) -> torch.nn.ModuleList:
    return backbone_of(model).layers


def compile_decoder_layers(model: PreTrainedModel | PeftModel, backend: str = "inductor") -> int:
    """Compile every decoder layer's ``forward`` in place, for good; the number of layers.

    The layer's ``__call__`` (where transformers applies gradient checkpointing) stays eager,
    so a recomputation replays the same compiled forward.
    """
    torch._dynamo.config.recompile_limit = max(
        torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT
    )
    layers = _layers(model)
    for layer in layers:
        layer.forward = torch.compile(layer.forward, dynamic=True, backend=backend)
    return len(layers)


@contextmanager
def compiled_layers(
    model: PreTrainedModel | PeftModel, backend: str = "inductor"
) -> Iterator[None]:
    """Run the block with compiled decoder layers, then restore the eager ones.

    Compiled code is cached on the layers' code object, so entering again (the same model, or
    another of the architecture) compiles nothing new for shapes and variants already seen.
    """
    layers = _layers(model)
    eager: list[Any] = [layer.__dict__.get("forward") for layer in layers]
    compile_decoder_layers(model, backend)
    # A graph the compiler cannot build runs eagerly, with a warning, rather than failing.
    suppressed = torch._dynamo.config.suppress_errors
    torch._dynamo.config.suppress_errors = True
    try:
        yield
    finally:
        torch._dynamo.config.suppress_errors = suppressed
        for layer, forward in zip(layers, eager, strict=True):
            if forward is None:
                del layer.forward  # back to the class's method
            else:
                layer.forward = forward
