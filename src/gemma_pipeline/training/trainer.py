"""TRL's SFTTrainer with what this project needs on top: logits only where the loss is, on every
device, packed rows, and batches that keep a question's rotated copies together, on one process
or shared by several (DDP)."""

from __future__ import annotations

import os
import random
from collections.abc import Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from transformers import PreTrainedModel
from trl import SFTTrainer

from gemma_pipeline.modeling.heads import backbone_of, project_to_logits
from gemma_pipeline.prompting import IGNORE_INDEX

from .data import GroupShuffleSampler, StepBatches, TrainRows
from .kernels import keep_norms_in_float32


def last_hidden_state(model: torch.nn.Module, **inputs: torch.Tensor | bool | None) -> torch.Tensor:
    """The decoder's last hidden states, computed by ``model``'s own forward with no logits.

    Through the forward, not the backbone alone: under DDP ``model`` is the DDP wrapper, whose
    forward is what prepares the gradient all-reduce of the backward. The LM head is given no
    position to project (``logits_to_keep`` empty); a hook on the backbone takes its output.
    """
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    found: list[torch.Tensor] = []
    hook = backbone_of(inner).register_forward_hook(
        lambda module, args, output: found.append(output.last_hidden_state)
    )
    device = inputs["input_ids"].device
    try:
        model(**inputs, logits_to_keep=torch.zeros(0, dtype=torch.long, device=device))
    finally:
        hook.remove()
    return found[0]


def selective_causal_lm_loss(
    model: PreTrainedModel | PeftModel | DistributedDataParallel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal-LM cross-entropy that projects only labelled positions through the LM head.

    Gemma's head (256k-262k vocabulary) is most of a small model's compute; with loss on a few
    completion tokens, projecting every position wastes it. TRL's fused head does the same but
    only compacts on CUDA/XPU. Final-logit softcapping is applied exactly as the model does.
    Packed rows come with ``position_ids`` and no ``attention_mask`` (see ``PackingCollator``).
    """
    hidden = last_hidden_state(
        model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    )
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    logits = project_to_logits(inner, hidden[:, :-1][mask])
    total = F.cross_entropy(logits, targets[mask], reduction="sum")
    denominator = mask.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(denominator, device=total.device).clamp(min=1)


class QLoRASFTTrainer(SFTTrainer):
    """SFTTrainer whose loss projects only labelled positions and whose batches keep groups.

    Each optimizer step trains on ``examples_per_step`` rows in micro-batches of at most
    ``micro_batch`` rows, shared by however many processes the launch started (``StepBatches``).
    ``recipe="padded"`` keeps the seed project's loss for comparison: the model's own forward, with
    logits over the whole vocabulary at every position, pads included.
    """

    def __init__(
        self,
        *args,
        examples_per_step: int,
        micro_batch: int,
        group_ids: Sequence[Hashable] | None = None,
        recipe: str = "packed",
        **kwargs,
    ) -> None:
        self._examples_per_step = examples_per_step
        self._micro_batch = micro_batch
        self._group_ids = group_ids
        self._recipe = recipe
        self._step_batches: StepBatches | None = None
        super().__init__(*args, **kwargs)
        if self.args.fp16:
            # TRL casts QLoRA adapters to bf16; fp16 mixed precision needs float32 master
            # weights (loss scaling unscales their gradients, and fp16 steps would round away).
            for parameter in self.model.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()
            keep_norms_in_float32(self.model)

    def get_train_dataloader(self) -> DataLoader:
        groups = self._group_ids
        if groups is None:  # every row a group of its own
            groups = range(len(self.train_dataset))
        self._step_batches = StepBatches(
            GroupShuffleSampler(groups, seed=self.args.data_seed or self.args.seed),
            self._examples_per_step,
            self._micro_batch,
            processes=self.accelerator.num_processes,
        )
        loader = DataLoader(
            TrainRows(self.train_dataset),
            batch_sampler=self._step_batches,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)  # deals each process its micro-batches

    def _run_epoch(self, **kwargs):
        # The epoch's order, set where the epoch starts: a resumed multi-process run skips the
        # epoch's first micro-batches through accelerate wrappers that do not pass set_epoch on.
        self._step_batches.set_epoch(kwargs["epoch"])
        return super()._run_epoch(**kwargs)

    def _save_rng_state(self, output_dir: str) -> None:
        if self.args.world_size <= 1:
            return super()._save_rng_state(output_dir)
        # The Trainer has every process write its own RNG file into the checkpoint. Gathered,
        # rank 0 writes them all (the same names and contents the Trainer resumes from): no other
        # process writes anywhere, and a checkpoint is whole once rank 0 is done with it.
        state = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cpu": torch.random.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.random.get_rng_state_all()
        states: list[dict | None] = [None] * self.args.world_size
        torch.distributed.all_gather_object(states, state)
        if self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            for index, each in enumerate(states):
                torch.save(each, os.path.join(output_dir, f"rng_state_{index}.pth"))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._recipe == "padded":
            loss = model(**inputs, use_cache=False, num_items_in_batch=num_items_in_batch).loss
        else:
            loss = selective_causal_lm_loss(
                model,
                inputs["input_ids"],
                inputs.get("attention_mask"),
                inputs["labels"],
                num_items_in_batch=num_items_in_batch,
                position_ids=inputs.get("position_ids"),
            )
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss
