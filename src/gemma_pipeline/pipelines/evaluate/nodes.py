"""Nodes of the evaluate pipeline: score the base model, then base + adapter (needs a model).

They write per-question and per-document predictions; the summarize pipeline turns those into
metrics without a model.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from gemma_pipeline.config import (
    EvaluateParams,
    FormatPromptsParams,
    ModelParams,
    TrainQloraParams,
    parse_params,
)
from gemma_pipeline.evaluation.benchmarks import score_benchmark, task_docs
from gemma_pipeline.evaluation.heldout import score_heldout
from gemma_pipeline.evaluation.lm_eval_bridge import run_lm_eval_tasks
from gemma_pipeline.evaluation.model import attach_adapter, load_base_for_evaluation
from gemma_pipeline.prompting import ChatFormat

logger = logging.getLogger(__name__)

MODELS = ("base", "finetuned")


def select_heldout_questions(prompts: pd.DataFrame, params: EvaluateParams) -> pd.DataFrame:
    """The held-out questions, unrotated, capped per task (first N in stable row_id order)."""
    unrotated = prompts["row_id"] == prompts["question_id"]
    held_out = prompts[(prompts["split"] == params.split) & unrotated]
    if held_out.empty:
        raise ValueError(f"prompts has no rows in the '{params.split}' split to evaluate")
    held_out = held_out.sort_values("row_id", kind="stable")
    if params.max_questions_per_task is not None:
        held_out = held_out.groupby("task", sort=True).head(params.max_questions_per_task)
    return held_out.reset_index(drop=True)


def score_heldout_questions(
    prompts: pd.DataFrame,
    adapter_path: str,
    evaluate_params: dict[str, Any],
    train_params: dict[str, Any],
    model_params: dict[str, Any],
) -> pd.DataFrame:
    """Score the base model, then base + adapter, on the same held-out questions.

    One base model serves both: the adapter is attached after the base is scored, on the same
    (possibly 4-bit) weights it was trained on.
    """
    params = parse_params(EvaluateParams, evaluate_params, "evaluate")
    train = parse_params(TrainQloraParams, train_params, "train_qlora")
    model_config = parse_params(ModelParams, model_params, "model")
    questions = select_heldout_questions(prompts, params)
    model, tokenizer = load_base_for_evaluation(model_config, train.quantization)
    predictions = []
    for label in MODELS:
        if label == "finetuned":
            model = attach_adapter(model, adapter_path)
        scores = score_heldout(
            model,
            tokenizer,
            questions,
            max_batch_tokens=params.max_batch_tokens,
            desc=f"held-out {label}",
        )
        predictions.append(scores.assign(model=label))
    return pd.concat(predictions, ignore_index=True).assign(
        split=params.split, base_model=model_config.name_or_path, adapter=adapter_path
    )


def _capped_benchmark_questions(questions: pd.DataFrame, params: EvaluateParams) -> pd.DataFrame:
    """Every few-shot row, and the first ``max_benchmark_docs`` test rows of each task."""
    if params.max_benchmark_docs is None:
        return questions
    is_test = questions["split"] == "test"
    capped = questions[is_test].groupby("task", sort=False).head(params.max_benchmark_docs)
    return pd.concat([capped, questions[~is_test]]).sort_index()


def score_benchmarks(
    benchmark_questions: pd.DataFrame,
    adapter_path: str,
    evaluate_params: dict[str, Any],
    train_params: dict[str, Any],
    model_params: dict[str, Any],
    format_params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """lm-eval-format benchmarks (and any lm-eval tasks), base then base + adapter.

    Returns one row per (model, task, shots, style, document), and what lm-eval itself
    reported for the tasks it ran (``evaluate.lm_eval_tasks``).
    """
    params = parse_params(EvaluateParams, evaluate_params, "evaluate")
    train = parse_params(TrainQloraParams, train_params, "train_qlora")
    model_config = parse_params(ModelParams, model_params, "model")
    prompt_format = parse_params(FormatPromptsParams, format_params, "format_prompts")
    if not params.benchmarks and not params.lm_eval_tasks:
        raise ValueError("evaluate.benchmarks and evaluate.lm_eval_tasks are both empty")
    questions = _capped_benchmark_questions(benchmark_questions, params)
    runs = [
        (task, shots, style)
        for task, benchmark in params.benchmarks.items()
        for shots in benchmark.num_fewshot
        for style in params.prompt_styles
    ]
    # Build the plain prompts before loading the model: a missing few-shot pool fails at once.
    for task, shots, _ in runs:
        task_docs(questions, task, shots, "plain")
    model, tokenizer = load_base_for_evaluation(model_config, train.quantization)
    chat = ChatFormat(tokenizer, prompt_format)

    predictions = []
    lm_eval: dict[str, Any] = {"models": {}}
    for label in MODELS:
        if label == "finetuned":
            model = attach_adapter(model, adapter_path)
        for task, shots, style in runs:
            started = time.perf_counter()
            scores = score_benchmark(
                model,
                tokenizer,
                questions,
                task,
                shots,
                style,
                chat=chat,
                max_batch_tokens=params.max_batch_tokens,
                generation_batch_size=params.generation_batch_size,
                label=label,
            )
            logger.info(
                "benchmark %s %s %d-shot %s: %d documents in %.0f s",
                label,
                task,
                shots,
                style,
                len(scores),
                time.perf_counter() - started,
            )
            predictions.append(scores.assign(model=label, task=task, shots=shots, style=style))
        if params.lm_eval_tasks:
            lm_eval["models"][label] = run_lm_eval_tasks(
                model, tokenizer, params.lm_eval_tasks, batch_size=params.lm_eval_batch_size
            )
    frame = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
    provenance = {"base_model": model_config.name_or_path, "adapter": adapter_path}
    return frame.assign(**provenance), {**provenance, **lm_eval}
