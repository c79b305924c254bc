"""Nodes of the evaluate pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from gemma_pipeline.config import (
    EvaluateParams,
    ModelParams,
    TrainQloraParams,
    parse_params,
)
from gemma_pipeline.evaluation.metrics import compare, per_question_results
from gemma_pipeline.evaluation.model import attach_adapter, load_base_for_evaluation
from gemma_pipeline.evaluation.scoring import MultipleChoiceItem, score_items
from gemma_pipeline.sources.schema import LETTERS

logger = logging.getLogger(__name__)


def select_eval_questions(prompts: pd.DataFrame, params: EvaluateParams) -> pd.DataFrame:
    """The held-out questions, unrotated, capped per task (first N in stable row_id order)."""
    unrotated = prompts["row_id"] == prompts["question_id"]
    held_out = prompts[(prompts["split"] == params.split) & unrotated]
    if held_out.empty:
        raise ValueError(f"prompts has no rows in the '{params.split}' split to evaluate")
    held_out = held_out.sort_values("row_id", kind="stable")
    if params.max_questions_per_task is not None:
        held_out = held_out.groupby("task", sort=True).head(params.max_questions_per_task)
    return held_out.reset_index(drop=True)


def _items(questions: pd.DataFrame) -> list[MultipleChoiceItem]:
    return [
        MultipleChoiceItem(
            prompt=row["prompt"],
            choices=list(row["choices"]),
            letters=LETTERS[: len(row["choices"])],
            completion=row["completion"],
        )
        for _, row in questions.iterrows()
    ]


def evaluate_adapter(
    prompts: pd.DataFrame,
    adapter_path: str,
    evaluate_params: dict[str, Any],
    train_params: dict[str, Any],
    model_params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score the base model, then base + adapter, on the same held-out questions."""
    params = parse_params(EvaluateParams, evaluate_params, "evaluate")
    train = parse_params(TrainQloraParams, train_params, "train_qlora")
    model_config = parse_params(ModelParams, model_params, "model")
    questions = select_eval_questions(prompts, params)
    items = _items(questions)

    # One base model serves both: the adapter is attached after the base is scored, on the
    # same (possibly 4-bit) weights it was trained on.
    model, tokenizer = load_base_for_evaluation(model_config, train.quantization)
    results = {}
    for label in ("base", "finetuned"):
        if label == "finetuned":
            model = attach_adapter(model, adapter_path)
        scores = score_items(model, tokenizer, items, params.batch_size, desc=f"evaluate {label}")
        results[label] = per_question_results(questions, scores).assign(model=label)

    metrics: dict[str, Any] = {
        "split": params.split,
        "base_model": model_config.name_or_path,
        "adapter": adapter_path,
        "tasks": {},
    }
    for task, task_questions in questions.groupby("task", sort=True):
        ids = set(task_questions["row_id"])
        n_letters = int(task_questions["choices"].map(len).max())
        metrics["tasks"][task] = compare(
            results["base"][results["base"]["row_id"].isin(ids)],
            results["finetuned"][results["finetuned"]["row_id"].isin(ids)],
            n_letters,
        )
        gain = metrics["tasks"][task]["metrics"][0]
        logger.info(
            "evaluate %s (n=%d): letter accuracy %.3f → %.3f (change %+.3f ± %.3f)",
            task,
            len(task_questions),
            gain["base"],
            gain["finetuned"],
            gain["change"],
            gain["change_se"] or float("nan"),
        )
    predictions = pd.concat([results["base"], results["finetuned"]], ignore_index=True)
    return predictions, metrics
