"""Nodes of the summarize pipeline: pure functions of the stored predictions (seconds, no model).

Rerun them alone to recompute the metrics (and the report) from an earlier evaluation:
``kedro run --pipeline results``.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from gemma_pipeline.evaluation.benchmarks import summarize_benchmarks
from gemma_pipeline.evaluation.heldout import summarize_heldout

logger = logging.getLogger(__name__)


def summarize_heldout_predictions(heldout_predictions: pd.DataFrame) -> dict[str, Any]:
    """Per task, every held-out metric for base and fine-tuned, and the paired change."""
    metrics = summarize_heldout(heldout_predictions)
    for task, result in metrics["tasks"].items():
        letter = next(row for row in result["metrics"] if row["metric"] == "letter_acc")
        logger.info(
            "held-out %s (n=%d): letter accuracy %.3f → %.3f (change %+.3f ± %.3f)",
            task,
            result["n"],
            letter["base"],
            letter["finetuned"],
            letter["change"],
            letter["change_se"] if letter["change_se"] is not None else float("nan"),
        )
    return metrics


def summarize_benchmark_predictions(
    benchmark_predictions: pd.DataFrame, lm_eval_results: dict[str, Any]
) -> dict[str, Any]:
    """lm-eval's metrics of every (task, shots, style) and model, as records."""
    metrics = summarize_benchmarks(benchmark_predictions, lm_eval_results)
    for record in metrics["records"]:
        if record["level"] == "task":
            logger.info(
                "benchmark %s %s %s-shot %s: %s %s ± %s (n=%s)",
                record["model"],
                record["task"],
                record["shots"],
                record["style"],
                record["metric"],
                record["value"],
                record["stderr"],
                record["n"],
            )
    return metrics
