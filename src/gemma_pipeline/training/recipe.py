"""The training recipe as small pure functions of the parameters (after TRL's sft.py)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from peft import LoraConfig
from trl import SFTConfig

from gemma_pipeline.config import TrainQloraParams
from gemma_pipeline.modeling.quantization import compute_device

from .data import CompletionCollator, PackingCollator

logger = logging.getLogger(__name__)

#: The seed project's recipe (``recipe: padded``): micro-batches of 4 rows, every row padded to 512.
PADDED_MICRO_BATCH = 4
PADDED_PAD_TO = 512


def micro_batching(params: TrainQloraParams, processes: int = 1) -> tuple[int, int]:
    """(rows per micro-batch, micro-batches per optimizer step) of one of ``processes``
    data-parallel processes.

    The optimizer step keeps ``examples_per_step`` examples (32) however many processes share
    it: each process takes its share, in micro-batches no larger than the recipe's, and the
    gradient all-reduce averages the shares back into the one step. So 2 processes halve each
    process's accumulation, or, with one micro-batch a step, its micro-batch.
    """
    largest = params.per_device_train_batch_size
    if params.recipe == "padded":
        largest = PADDED_MICRO_BATCH
    share = -(-params.examples_per_step // processes)
    per_process = -(-share // largest)
    return -(-share // per_process), per_process


def get_collator(
    params: TrainQloraParams, pad_token_id: int, width_multiple: int = 1
) -> CompletionCollator | PackingCollator:
    if params.recipe == "padded":
        return CompletionCollator(pad_token_id, loss_on=params.loss_on, pad_to=PADDED_PAD_TO)
    return PackingCollator(pad_token_id, loss_on=params.loss_on, width_multiple=width_multiple)


def get_peft_config(params: TrainQloraParams) -> LoraConfig:
    return LoraConfig(
        r=params.lora.r,
        lora_alpha=params.lora.alpha,
        lora_dropout=params.lora.dropout,
        target_modules=list(params.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def run_fingerprint(params: TrainQloraParams, model_name: str, data_fingerprint: str) -> str:
    """Identify a training run by everything that shapes its result, except ``resume``."""
    recipe = params.model_dump(exclude={"resume", "checkpoint_dir", "logging_steps"})
    payload = json.dumps([recipe, model_name, data_fingerprint], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def get_sft_config(
    params: TrainQloraParams, output_dir: Path, report_to: list[str], processes: int = 1
) -> SFTConfig:
    on_gpu = compute_device() == "cuda"
    micro_batch, accumulation = micro_batching(params, processes)
    optim = params.optim
    if not on_gpu and "8bit" in optim:
        # paged/8-bit optimizers are CUDA kernels; the CPU falls back to the same AdamW in 32 bit.
        logger.warning("optimizer %s needs CUDA: using adamw_torch on the CPU", optim)
        optim = "adamw_torch"
    return SFTConfig(
        output_dir=str(output_dir),
        seed=params.seed,
        data_seed=params.seed,
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=accumulation,
        learning_rate=params.learning_rate,
        lr_scheduler_type=params.lr_scheduler_type,
        warmup_steps=params.warmup_steps,
        weight_decay=params.weight_decay,
        max_grad_norm=params.max_grad_norm,
        num_train_epochs=params.num_train_epochs,
        max_steps=params.max_steps,
        optim=optim,
        # Resolved by modeling.capability (build_trainer): never "auto" here.
        bf16=params.bf16 is True and on_gpu,
        fp16=params.fp16 is True and on_gpu,
        # Without it, processes launched on a machine with no GPU would each train alone.
        use_cpu=not on_gpu,
        gradient_checkpointing=params.gradient_checkpointing,
        # Reentrant checkpointing runs the backward of a layer outside DDP's view of it.
        gradient_checkpointing_kwargs={"use_reentrant": False},
        # Every LoRA weight gets a gradient every step: no search for unused ones.
        ddp_find_unused_parameters=False,
        logging_steps=params.logging_steps,
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=params.save_total_limit,
        report_to=report_to,
        # The data is tokenized by our own pipeline (labels included): TRL must not redo it.
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def describe(
    params: TrainQloraParams, quantization: Any, device: str, attention: str, processes: int = 1
) -> dict[str, Any]:
    """The settings a run actually used, for the metrics JSON and the report."""
    micro_batch, accumulation = micro_batching(params, processes)
    return {
        "device": device,
        "attention": attention,
        "processes": processes,
        "examples_per_step": params.examples_per_step,
        "micro_batch": micro_batch,  # per process
        "gradient_accumulation_steps": accumulation,  # per process
        "quantization": quantization.to_dict() if quantization is not None else None,
        "params": params.model_dump(),
    }
