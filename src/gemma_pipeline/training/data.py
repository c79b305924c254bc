"""Turning tokenized rows into training batches: padded (the seed's) or packed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Sampler

from gemma_pipeline.prompting import IGNORE_INDEX


def training_rows(
    features: Sequence[dict[str, Any]], loss_on: str
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row; the loss stays where the tokenize stage put it.

    With ``loss_on="answer_letter"`` the row is cut right after the first completion token (the
    answer letter) and only that token carries a label: the rest of the completion costs a
    forward pass and teaches nothing the letter-scoring evaluation measures.
    """
    rows = []
    for feature in features:
        input_ids = list(feature["input_ids"])
        labels = list(feature["labels"])
        if loss_on == "answer_letter":
            start = int(feature["prompt_length"])
            input_ids = input_ids[: start + 1]
            labels = [IGNORE_INDEX] * start + [input_ids[start]]
        rows.append((input_ids, labels))
    return rows


@dataclass
class CompletionCollator:
    """Right-pads a batch of pre-tokenized rows to the longest row, or to ``pad_to`` (the seed
    padded every row to 512)."""

    pad_token_id: int
    loss_on: str = "completion"
    pad_to: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = training_rows(features, self.loss_on)
        width = max(len(input_ids) for input_ids, _ in rows)
        width = max(width, self.pad_to or 0)
        batch_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        batch_labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (input_ids, labels) in enumerate(rows):
            batch_ids[i, : len(input_ids)] = torch.tensor(input_ids)
            batch_labels[i, : len(labels)] = torch.tensor(labels)
            attention[i, : len(input_ids)] = 1
        return {"input_ids": batch_ids, "attention_mask": attention, "labels": batch_labels}


#: Tokens per packed row: twice the seed's max_length, so any row fits. Eager attention is dense
#: within a packed row, so short packed rows keep the wasted (masked) attention small.
PACKED_ROW_TOKENS = 1024


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of rows grouped into packed rows of at most ``capacity`` tokens (first fit,
    longest first; a longer row gets a packed row of its own)."""
    packed: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((k for k, free in enumerate(room) if free >= lengths[index]), None)
        if slot is None:
            packed.append([])
            room.append(max(capacity, lengths[index]))
            slot = len(packed) - 1
        packed[slot].append(index)
        room[slot] -= lengths[index]
    return packed


@dataclass
class PackingCollator:
    """Joins a batch's rows into a few packed rows of up to ``PACKED_ROW_TOKENS`` tokens.

    ``position_ids`` restart at 0 for every row and there is no ``attention_mask``: from that,
    transformers builds a block-diagonal causal mask, so no token attends to another row. The
    label of each row's first token is ignored, so no row is ever the target of the previous
    row's last token. The short tail that evens out the packed rows is padding in a block of its
    own, with no labels.
    """

    pad_token_id: int
    loss_on: str = "completion"
    row_tokens: int = PACKED_ROW_TOKENS
    # Width rounded up to a multiple of this: flex attention works in 128-token blocks, and few
    # distinct shapes mean few recompilations of its kernels.
    width_multiple: int = 1

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = training_rows(features, self.loss_on)
        packed = pack_rows([len(ids) for ids, _ in rows], self.row_tokens)
        width = max(sum(len(rows[i][0]) for i in group) for group in packed)
        width = -(-width // self.width_multiple) * self.width_multiple
        batch_ids, batch_labels, batch_positions = [], [], []
        for group in packed:
            input_ids, labels, positions = [], [], []
            for row_ids, row_labels in (rows[i] for i in group):
                input_ids += row_ids
                labels += [IGNORE_INDEX, *row_labels[1:]]
                positions += range(len(row_ids))
            pad = width - len(input_ids)
            batch_ids.append(input_ids + [self.pad_token_id] * pad)
            batch_labels.append(labels + [IGNORE_INDEX] * pad)
            batch_positions.append(positions + list(range(pad)))
        return {
            "input_ids": torch.tensor(batch_ids),
            "position_ids": torch.tensor(batch_positions),
            "labels": torch.tensor(batch_labels),
        }


def real_token_count(batch: dict[str, torch.Tensor], pad_token_id: int) -> int:
    """Non-pad tokens in a collated batch, padded or packed."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int((batch["input_ids"] != pad_token_id).sum())


class GroupShuffleSampler(Sampler[int]):
    """Shuffles groups (a question and its rotated copies), keeping each group's rows adjacent.

    Deterministic in (seed, epoch), so a resumed run sees the same order as an uninterrupted one.
    """

    def __init__(self, group_ids: Sequence[str], seed: int) -> None:
        self.seed = seed
        self.epoch = 0
        order: dict[str, list[int]] = {}
        for index, group in enumerate(group_ids):
            order.setdefault(group, []).append(index)
        self.groups = list(order.values())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for position in torch.randperm(len(self.groups), generator=generator).tolist():
            yield from self.groups[position]
