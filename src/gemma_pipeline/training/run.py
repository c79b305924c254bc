"""One training run: model, data and trainer from parameters; train; hand back the adapter."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import TrainerState, set_seed
from transformers.trainer_utils import TrainOutput, get_last_checkpoint

from gemma_pipeline.config import ModelParams, TrainQloraParams
from gemma_pipeline.distributed import check_same_on_every_process, world_size
from gemma_pipeline.modeling.capability import choose_training_setup, probe_device
from gemma_pipeline.modeling.from_params import model_from_params, tokenizer_from_params
from gemma_pipeline.modeling.quantization import get_quantization_config

from .checkpoints import checkpoint_step, last_good_checkpoint
from .data import rows_digest
from .kernels import allow_shape_changes, apply_fused_kernels
from .recipe import (
    describe,
    get_collator,
    get_peft_config,
    get_sft_config,
    micro_batching,
    run_fingerprint,
)
from .trainer import QLoRASFTTrainer

logger = logging.getLogger(__name__)


def build_trainer(
    train_dataset: Dataset,
    params: TrainQloraParams,
    model_params: ModelParams,
    report_to: list[str] | None = None,
) -> tuple[QLoRASFTTrainer, dict[str, Any]]:
    """The trainer for ``train_dataset`` (tokenized rows), and what the run's history records
    about its setup. The benchmark times this same trainer."""
    set_seed(params.seed)
    if params.tasks is not None:
        wanted = set(params.tasks)
        # In memory: a cache file would be written into the tokenized artifact's folder.
        train_dataset = train_dataset.filter(
            lambda row: row["task"] in wanted, desc="tasks", keep_in_memory=True
        )
        if len(train_dataset) == 0:
            raise ValueError(f"train_qlora.tasks {sorted(wanted)} selects no training rows")
    if params.max_train_rows is not None:
        train_dataset = train_dataset.select(range(min(params.max_train_rows, len(train_dataset))))
    # Mixed precision, 4-bit compute dtype, attention and kernels for this device (or refused).
    chosen = choose_training_setup(params, model_params, probe_device())
    params, model_params, device = chosen.params, chosen.model_params, chosen.device.kind
    quantization = get_quantization_config(params.quantization)
    tokenizer = tokenizer_from_params(model_params)
    if chosen.flex_attention:
        allow_shape_changes()
    model = model_from_params(model_params, quantization)
    fused = chosen.fused_kernels and apply_fused_kernels(model)

    # The rows' content, not datasets' fingerprint of how they were made: the same on a process
    # that loaded them from disk and one that tokenized them itself.
    digest = rows_digest(train_dataset)
    fingerprint = run_fingerprint(params, model_params.name_or_path, digest)
    output_dir = Path(params.checkpoint_dir) / fingerprint
    resume_from = None
    if params.resume:
        # Not get_last_checkpoint: a run killed while writing its last checkpoint left it partial.
        good = last_good_checkpoint(output_dir)
        resume_from = str(good) if good else None
        if resume_from is None:
            logger.warning(
                "resume=true but no usable checkpoint in %s: training from the start", output_dir
            )
        else:
            logger.info("Resuming from %s", resume_from)
    elif output_dir.is_dir() and get_last_checkpoint(str(output_dir)):
        logger.warning(
            "%s holds checkpoints of this exact configuration; pass "
            "--params train_qlora.resume=true to continue them. Starting over.",
            output_dir,
        )

    group_ids = train_dataset["question_id"] if params.group_rotations else None
    processes = world_size()
    micro_batch, accumulation = micro_batching(params, processes)
    logger.info(
        "%d examples per optimizer step over %d process(es): each trains %d micro-batch(es) "
        "of <= %d rows",
        params.examples_per_step,
        processes,
        accumulation,
        micro_batch,
    )
    trainer = QLoRASFTTrainer(
        model=model,
        args=get_sft_config(params, output_dir, report_to or [], processes),
        train_dataset=train_dataset,
        data_collator=get_collator(
            params, tokenizer.pad_token_id, width_multiple=128 if chosen.flex_attention else 1
        ),
        processing_class=tokenizer,
        peft_config=get_peft_config(params),
        examples_per_step=params.examples_per_step,
        micro_batch=micro_batching(params)[0],
        group_ids=group_ids,
        recipe=params.recipe,
    )
    check_same_on_every_process({"training rows": digest, "checkpoint to resume": resume_from})
    setup = {
        "fingerprint": fingerprint,
        "checkpoint_dir": str(output_dir),
        "resumed_from": resume_from,
        "train_rows": len(train_dataset),
        "setup": describe(params, quantization, device, model_params.attn_implementation, processes)
        | {"fused_kernels": fused, "capability": chosen.describe()},
    }
    return trainer, setup


def train_adapter(
    train_dataset: Dataset,
    params: TrainQloraParams,
    model_params: ModelParams,
    report_to: list[str] | None = None,
) -> tuple[PeftModel, dict[str, Any]]:
    """Train a LoRA adapter on ``train_dataset`` (tokenized rows) and return it with its history."""
    trainer, setup = build_trainer(train_dataset, params, model_params, report_to)
    started = time.perf_counter()
    resume_from = setup["resumed_from"]
    if resume_from and 0 < params.max_steps <= checkpoint_step(Path(resume_from)):
        result = _finished(trainer, Path(resume_from))
    else:
        result = trainer.train(resume_from_checkpoint=resume_from)
    history = {
        **setup,
        "global_steps": result.global_step,
        "final_train_loss": result.training_loss,
        "wall_seconds": time.perf_counter() - started,
        "metrics": result.metrics,
        "log_history": trainer.state.log_history,
        "trainable_parameters": sum(
            p.numel() for p in trainer.model.parameters() if p.requires_grad
        ),
        "torch_threads": torch.get_num_threads(),
    }
    return trainer.model, history


def _finished(trainer: QLoRASFTTrainer, checkpoint: Path) -> TrainOutput:
    """The result of a run whose last checkpoint is ``checkpoint``: its adapter and state.

    Not ``trainer.train(resume_from_checkpoint=...)``: resumed at ``max_steps`` in the middle
    of an epoch, transformers (5.24) trains one step more (tests/training/test_checkpoints.py).
    """
    logger.info(
        "%s is the run's last step: its adapter is the result, no step is trained", checkpoint
    )
    weights = load_file(checkpoint / "adapter_model.safetensors")
    loaded = set_peft_model_state_dict(trainer.model, weights)
    if loaded.unexpected_keys:
        raise ValueError(
            f"{checkpoint}: weights the adapter does not have: {loaded.unexpected_keys}"
        )
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return TrainOutput(trainer.state.global_step, None, {})
