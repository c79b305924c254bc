"""One training run: model, data and trainer from parameters; train; hand back the adapter."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint

from gemma_pipeline.config import ModelParams, TrainQloraParams
from gemma_pipeline.modeling.capability import choose_training_setup, probe_device
from gemma_pipeline.modeling.from_params import model_from_params, tokenizer_from_params
from gemma_pipeline.modeling.quantization import get_quantization_config

from .kernels import allow_shape_changes, apply_fused_kernels
from .recipe import (
    describe,
    get_collator,
    get_peft_config,
    get_sft_config,
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
        train_dataset = train_dataset.filter(lambda row: row["task"] in wanted, desc="tasks")
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

    fingerprint = run_fingerprint(params, model_params.name_or_path, train_dataset._fingerprint)
    output_dir = Path(params.checkpoint_dir) / fingerprint
    last_checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if params.resume and last_checkpoint is None:
        logger.warning("resume=true but no checkpoint in %s: training from the start", output_dir)
    elif last_checkpoint and not params.resume:
        logger.warning(
            "%s holds checkpoints of this exact configuration; pass "
            "--params train_qlora.resume=true to continue them. Starting over.",
            output_dir,
        )
    resume_from = last_checkpoint if params.resume else None
    if resume_from:
        logger.info("Resuming from %s", resume_from)

    group_ids = train_dataset["question_id"] if params.group_rotations else None
    trainer = QLoRASFTTrainer(
        model=model,
        args=get_sft_config(params, output_dir, report_to or []),
        train_dataset=train_dataset,
        data_collator=get_collator(
            params, tokenizer.pad_token_id, width_multiple=128 if chosen.flex_attention else 1
        ),
        processing_class=tokenizer,
        peft_config=get_peft_config(params),
        group_ids=group_ids,
        recipe=params.recipe,
    )
    setup = {
        "fingerprint": fingerprint,
        "checkpoint_dir": str(output_dir),
        "resumed_from": resume_from,
        "train_rows": len(train_dataset),
        "setup": describe(params, quantization, device, model_params.attn_implementation)
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
    result = trainer.train(resume_from_checkpoint=setup["resumed_from"])
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
