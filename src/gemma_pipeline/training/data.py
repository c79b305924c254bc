"""Turning tokenized rows into training batches: padded (the seed's) or packed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset
from torch.utils.data import Sampler

from gemma_pipeline.prompting import IGNORE_INDEX


def training_rows(
    features: Sequence[dict[str, Any]], loss_on: str
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row; the loss stays where the tokenize stage put it.

    With ``loss_on="answer_letter"`` the row is cut right after the first completion token (the
    answer letter) and only that token carries a label: the rest of the completion costs a
    forward pass and teaches nothing the letter-scoring evaluation measures. A filler row (see
    ``TrainRows``) carries no label at all.
    """
    rows = []
    for feature in features:
        input_ids = list(feature["input_ids"])
        labels = list(feature["labels"])
        if loss_on == "answer_letter":
            start = int(feature["prompt_length"])
            input_ids = input_ids[: start + 1]
            labels = [IGNORE_INDEX] * start + [input_ids[start]]
        if feature.get(FILLER):
            labels = [IGNORE_INDEX] * len(input_ids)
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

    def __init__(self, group_ids: Sequence[Hashable], seed: int) -> None:
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


#: The key that marks a filler row: forward and backward like any row, and no loss.
FILLER = "filler"


class TrainRows(torch.utils.data.Dataset):
    """The training rows by index; index ``len(rows) + i`` is row ``i`` again, as a filler.

    A data-parallel process that an epoch's last step leaves without a row (fewer rows than
    processes) trains on a filler: it runs the forward and backward every process must run
    for the step's gradient all-reduce, and adds nothing to the loss or to its token count.
    """

    def __init__(self, rows: Dataset) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < len(self.rows):
            return self.rows[index]
        return {**self.rows[index - len(self.rows)], FILLER: True}


def step_micro_batches(
    step: Sequence[int], micro_batch: int, processes: int, filler_offset: int
) -> list[list[int]]:
    """One optimizer step's rows as ``processes × k`` micro-batches, micro-batch ``j`` for
    process ``j mod processes``.

    ``k`` is the fewest micro-batches of at most ``micro_batch`` rows per process; the rows are
    cut in order into micro-batches whose sizes differ by at most one, so a group of adjacent
    rows stays whole wherever a single process would keep it whole. Where the step has fewer
    rows than micro-batches, the missing ones are fillers (``filler_offset`` + a row of the step).
    """
    per_process = -(-len(step) // (processes * micro_batch))
    count = processes * per_process
    size, extra = divmod(len(step), count)
    batches, start = [], 0
    for j in range(count):
        end = start + size + (j < extra)
        batches.append(list(step[start:end]) or [filler_offset + step[0]])
        start = end
    return batches


class StepBatches(Sampler[list[int]]):
    """Every optimizer step's micro-batches, for ``processes`` data-parallel processes.

    An epoch's order (a ``GroupShuffleSampler``'s) is cut into steps of ``examples_per_step``
    rows (the epoch's last may have fewer), each step by ``step_micro_batches``. accelerate's
    ``BatchSamplerShard`` deals these out round-robin, micro-batch ``j`` to process ``j mod N``,
    so the processes together train each step on exactly the rows one process would, every row
    once per epoch, and no process ever gets a micro-batch of another step. ``batch_size`` is
    deliberately absent: accelerate then deals micro-batches of any size and pads nothing.
    """

    def __init__(
        self, order: Sampler[int], examples_per_step: int, micro_batch: int, processes: int = 1
    ) -> None:
        self.order = order
        self.examples_per_step = examples_per_step
        self.micro_batch = micro_batch
        self.processes = processes

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def _steps(self, indices: Sequence[int]) -> Iterator[list[list[int]]]:
        for start in range(0, len(indices), self.examples_per_step):
            step = indices[start : start + self.examples_per_step]
            yield step_micro_batches(step, self.micro_batch, self.processes, len(self.order))

    def __len__(self) -> int:
        return sum(len(step) for step in self._steps(range(len(self.order))))

    def __iter__(self) -> Iterator[list[int]]:
        for step in self._steps(list(self.order)):
            yield from step


def rows_digest(rows: Dataset) -> str:
    """A hash of the rows' content, in order (not of how ``datasets`` stores them): equal on
    two processes exactly when they hold the same training rows."""
    digest = hashlib.sha1()
    for batch in rows.with_format("arrow").iter(batch_size=8192):
        for name in sorted(batch.column_names):
            column = batch.column(name).combine_chunks()
            digest.update(f"{name}:{column.type}".encode())
            if pa.types.is_list(column.type) and pa.types.is_integer(column.type.value_type):
                digest.update(pc.list_value_length(column).to_numpy().tobytes())
                digest.update(pc.list_flatten(column).to_numpy().tobytes())
            elif pa.types.is_integer(column.type):
                digest.update(column.to_numpy().tobytes())
            else:
                digest.update(json.dumps(column.to_pylist(), default=str).encode())
    return digest.hexdigest()
