"""Attention to one shared prefix's keys and values, without a copy of them in every row.

Few-shot evaluation asks many questions after the same 5-shot block. Running the block once
and then giving every row its own copy of the block's KV cache (``batch_repeat_interleave``)
spends memory and copy kernels on identical data: 18% of MMLU's device time on the H200
(docs/benchmarks.md), and the copies bound how many rows fit in a batch. Here every row
attends to one ``[1, kv_heads, P, head_dim]`` prefix plus its own cache of row tokens. The
prefix scores of all rows' queries are one matrix product per KV head.

The maths is transformers' eager attention: scores in the model's dtype, scaled, soft-capped
(Gemma-2), masked (causal, padding and sliding window, by absolute position), a float32
softmax over prefix and row together (taken in two parts with one maximum and one sum), and
the probabilities cast back before they weight the values.

Use: ``with shared_prefix_attention(model):`` and pass ``prefix_attention=PrefixAttention(...)``
to every forward inside it (``run_backbone`` forwards keyword arguments to the attention).
``RowCache`` is a preallocated cache of the rows' tokens whose every shape and address stays
fixed from step to step, so a decoding step can be replayed as a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel
from transformers import AttentionInterface, PreTrainedModel

from .heads import unwrap_causal_lm

ATTENTION_NAME = "shared_prefix"
#: Positions of keys that hold no token (padding).
NO_POSITION = -1
#: The layers' ``attention_mask`` argument: masks come from ``PrefixAttention`` positions instead.
NO_MASKS = {"full_attention": None, "sliding_attention": None}


@dataclass(frozen=True)
class SharedPrefix:
    """Keys and values of one prefix at every layer: ``[1, kv_heads, P, head_dim]`` each."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    @classmethod
    def from_cache(cls, cache: Any) -> SharedPrefix:
        """From a ``DynamicCache`` of a one-row forward over the prefix (no sliding layers)."""
        return cls(
            tuple(layer.keys for layer in cache.layers),
            tuple(layer.values for layer in cache.layers),
        )


@dataclass
class PrefixAttention:
    """One forward's positions: which keys each query may see.

    ``query_positions`` ``[B, Q]`` and ``key_positions`` ``[B, S]`` are absolute positions (the
    prefix holds 0..P-1); ``key_positions`` covers the row cache after this forward's keys are
    added, with ``NO_POSITION`` for padding.
    """

    query_positions: torch.Tensor
    key_positions: torch.Tensor
    prefix: SharedPrefix | None = None
    _masks: dict[int | None, tuple[torch.Tensor, torch.Tensor | None]] = field(
        default_factory=dict, repr=False
    )

    def masks(self, window: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(row mask ``[B, 1, 1, Q, S]``, prefix mask ``[B, 1, 1, Q, P]`` or None): True = seen."""
        if window not in self._masks:
            queries = self.query_positions[:, :, None]
            keys = self.key_positions[:, None, :]
            row = (keys != NO_POSITION) & (keys <= queries)
            prefix = None
            if window is not None:
                row &= queries - keys < window
                if self.prefix is not None:
                    starts = torch.arange(self.prefix.length, device=queries.device)
                    prefix = (queries - starts < window)[:, None, None]
            self._masks[window] = (row[:, None, None], prefix)
        return self._masks[window]


class RowCache:
    """Keys and values of the rows' own tokens in fixed buffers ``[B, kv_heads, length, d]``.

    A forward writes its keys at ``index`` (a device tensor of buffer positions, set before the
    forward) and attends to the whole buffer; ``PrefixAttention.key_positions`` marks the
    unwritten part with ``NO_POSITION``. Each layer's buffers take the shape and dtype of its
    first keys (a 4-bit model's keys come out in its compute dtype). The model only calls
    ``update`` (and ``get_seq_length`` where no positions are given).
    """

    def __init__(self, length: int, device: torch.device) -> None:
        self.length = length
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.index = torch.zeros(0, dtype=torch.long, device=device)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *_, **__
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx not in self.keys:
            batch, kv_heads, _, dim = key_states.shape
            shape = (batch, kv_heads, self.length, dim)
            self.keys[layer_idx] = key_states.new_zeros(shape)
            self.values[layer_idx] = value_states.new_zeros(shape)
        self.keys[layer_idx].index_copy_(2, self.index, key_states)
        self.values[layer_idx].index_copy_(2, self.index, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


def _matmul_float32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` (3-d) accumulated and returned in float32, never rounded to a 16-bit dtype.

    The probabilities weight prefix and row values in two products; rounding each to bf16
    before their sum would round twice where eager attention's single product rounds once.
    """
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        return torch.bmm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


def attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    sliding_window: int | None = None,
    prefix_attention: PrefixAttention | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An ``AttentionInterface`` function: ``query [B, H, Q, d]``, ``key/value [B, Hkv, S, d]``."""
    if prefix_attention is None:
        raise ValueError(
            f"attention {ATTENTION_NAME!r} needs prefix_attention=PrefixAttention(...) passed "
            "to the forward"
        )
    batch, heads, queries, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scaling = dim**-0.5 if scaling is None else scaling
    # Query heads h = k * group + i all read KV head k: [B, Hkv, group * Q, d], no repeated KV.
    grouped = query.reshape(batch, kv_heads, group * queries, dim)
    row_mask, prefix_mask = prefix_attention.masks(sliding_window)

    def scores(raw: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raw = raw * scaling
        if softcap is not None:
            raw = torch.tanh(raw / softcap) * softcap
        raw = raw.float().view(batch, kv_heads, group, queries, -1)
        if mask is not None:
            raw = raw.masked_fill(~mask, torch.finfo(torch.float32).min)
        return raw

    row = scores(grouped @ key.transpose(-1, -2), row_mask)
    prefix = prefix_attention.prefix
    if prefix is not None and prefix.length:
        # Every query sits after the prefix (position >= P), so a sliding window never reaches
        # back past P - window: those keys are left out rather than masked.
        first = max(0, prefix.length - sliding_window + 1) if sliding_window else 0
        prefix_keys = prefix.keys[module.layer_idx][0, :, first:]  # [Hkv, P', d]
        if prefix_mask is not None:
            prefix_mask = prefix_mask[..., first:]
        by_head = grouped.transpose(0, 1).reshape(kv_heads, batch * group * queries, dim)
        head_major = (by_head @ prefix_keys.transpose(-1, -2)).view(
            kv_heads, batch, group * queries, -1
        )
        shared = scores(head_major.transpose(0, 1), prefix_mask)
        top = torch.maximum(row.amax(-1, keepdim=True), shared.amax(-1, keepdim=True))
        row, shared = (row - top).exp(), (shared - top).exp()
        total = row.sum(-1, keepdim=True) + shared.sum(-1, keepdim=True)
        shared_weights = (shared / total).to(query.dtype).view(batch, kv_heads, group * queries, -1)
        prefix_values = prefix.values[module.layer_idx][0, :, first:]
        from_prefix = _matmul_float32(
            shared_weights.transpose(0, 1).reshape(kv_heads, batch * group * queries, -1),
            prefix_values,
        ).view(kv_heads, batch, group * queries, dim)
        row_weights = (row / total).to(query.dtype).view(batch * kv_heads, group * queries, -1)
        from_row = _matmul_float32(row_weights, value.reshape(batch * kv_heads, -1, dim))
        output = from_prefix.transpose(0, 1) + from_row.view(batch, kv_heads, group * queries, dim)
        output = output.to(query.dtype)
    else:
        weights = torch.softmax(row, dim=-1).to(query.dtype)
        output = weights.view(batch, kv_heads, group * queries, -1) @ value
    # [B, Q, H, d], as eager attention returns it.
    return output.reshape(batch, heads, queries, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, attention)


def attends_eagerly(model: PreTrainedModel | PeftModel) -> bool:
    """Whether the model attends with transformers' eager attention, which this replaces.

    Eager attention materializes the same score matrices (and repeats the KV heads); a fused
    kernel (SDPA, flex) does not, and can be faster on the CPU than these float32 scores.
    """
    return unwrap_causal_lm(model).config._attn_implementation in (None, "eager")


@contextmanager
def shared_prefix_attention(model: PreTrainedModel | PeftModel) -> Iterator[None]:
    """Route the model's attention through ``attention`` for the duration of the block."""
    config = unwrap_causal_lm(model).config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
