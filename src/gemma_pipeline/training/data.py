"""Turning tokenized rows into training batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Sampler

IGNORE_INDEX = -100


@dataclass
class CompletionCollator:
    """Right-pads a batch of pre-tokenized rows; the loss stays where the tokenize stage put it.

    With ``loss_on="answer_letter"`` the row is cut right after the first completion token (the
    answer letter) and only that token carries a label: the rest of the completion costs a
    forward pass and teaches nothing the letter-scoring evaluation measures.
    """

    pad_token_id: int
    loss_on: str = "completion"

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = []
        for feature in features:
            input_ids = list(feature["input_ids"])
            labels = list(feature["labels"])
            if self.loss_on == "answer_letter":
                start = int(feature["prompt_length"])
                input_ids = input_ids[: start + 1]
                labels = [IGNORE_INDEX] * start + [input_ids[start]]
            rows.append((input_ids, labels))
        width = max(len(input_ids) for input_ids, _ in rows)
        batch_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        batch_labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (input_ids, labels) in enumerate(rows):
            batch_ids[i, : len(input_ids)] = torch.tensor(input_ids)
            batch_labels[i, : len(labels)] = torch.tensor(labels)
            attention[i, : len(input_ids)] = 1
        return {"input_ids": batch_ids, "attention_mask": attention, "labels": batch_labels}


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
