"""Nodes of the train_qlora pipeline: setup → train → save, nothing else."""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict
from matplotlib.figure import Figure
from peft import PeftModel

from gemma_pipeline.config import ModelParams, TrainQloraParams, parse_params
from gemma_pipeline.reporting.plots import plot_loss_curve
from gemma_pipeline.training.run import train_adapter


def _wandb_active() -> bool:
    try:
        import wandb
    except ImportError:
        return False
    return wandb.run is not None


def train_qlora(
    tokenized: DatasetDict,
    train_params: dict[str, Any],
    model_params: dict[str, Any],
) -> tuple[PeftModel, dict[str, Any], Figure]:
    """Fine-tune a LoRA adapter on the tokenized train split.

    Returns the adapter (saved by the catalog's versioned adapter dataset), the training metrics
    and the loss curve.
    """
    params = parse_params(TrainQloraParams, train_params, "train_qlora")
    model = parse_params(ModelParams, model_params, "model")
    if "train" not in tokenized:
        raise ValueError(f"tokenized has no 'train' split (splits: {sorted(tokenized)})")
    # The W&B run, if any, is opened by the tracking hook; the trainer logs its curves into it.
    report_to = ["wandb"] if _wandb_active() else []
    adapter, history = train_adapter(tokenized["train"], params, model, report_to=report_to)
    return adapter, history, plot_loss_curve(history["log_history"])
