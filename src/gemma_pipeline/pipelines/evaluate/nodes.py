"""Nodes of the evaluate pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from gemma_pipeline.config import (
    EvaluateParams,
    FormatPromptsParams,
    ModelParams,
    TrainQloraParams,
    parse_params,
)
from gemma_pipeline.evaluation.benchmarks import run_benchmark, summarize, task_docs
from gemma_pipeline.evaluation.metrics import compare, per_question_results
from gemma_pipeline.evaluation.model import attach_adapter, load_base_for_evaluation
from gemma_pipeline.evaluation.scoring import MultipleChoiceItem, score_items
from gemma_pipeline.evaluation.tasks import ChatFormat
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


def _benchmark_questions(questions: pd.DataFrame, params: EvaluateParams) -> pd.DataFrame:
    """Every few-shot row, and the first ``max_benchmark_docs`` test rows of each task."""
    if params.max_benchmark_docs is None:
        return questions
    is_test = questions["split"] == "test"
    capped = questions[is_test].groupby("task", sort=False).head(params.max_benchmark_docs)
    return pd.concat([capped, questions[~is_test]]).sort_index()


def evaluate_benchmarks(
    benchmark_questions: pd.DataFrame,
    adapter_path: str,
    evaluate_params: dict[str, Any],
    train_params: dict[str, Any],
    model_params: dict[str, Any],
    format_params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """lm-eval-format benchmarks (and any lm-eval tasks), base then base + adapter.

    Returns one row per (model, task, shots, style, document) and the metrics: for each model
    and each (task, shots, style), lm-eval's metrics with standard errors, plus seconds taken.
    """
    params = parse_params(EvaluateParams, evaluate_params, "evaluate")
    train = parse_params(TrainQloraParams, train_params, "train_qlora")
    model_config = parse_params(ModelParams, model_params, "model")
    prompt_format = parse_params(FormatPromptsParams, format_params, "format_prompts")
    if not params.benchmarks and not params.lm_eval_tasks:
        raise ValueError("evaluate.benchmarks and evaluate.lm_eval_tasks are both empty")
    questions = _benchmark_questions(benchmark_questions, params)
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

    predictions, metrics = [], {"models": {}, "runs": []}
    for label in ("base", "finetuned"):
        if label == "finetuned":
            model = attach_adapter(model, adapter_path)
        results: dict[str, Any] = {}
        for task, shots, style in runs:
            scores, seconds = run_benchmark(
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
            key = f"{task}|{shots}-shot|{style}"
            results[key] = {**summarize(task, scores), "seconds": seconds}
            predictions.append(scores.assign(model=label, task=task, shots=shots, style=style))
            headline = next(iter(results[key].values()))
            logger.info(
                "benchmark %s %s: %s %.4f ± %.4f (%.0f s)",
                label,
                key,
                next(iter(results[key])),
                headline["value"],
                headline["stderr"] or float("nan"),
                seconds,
            )
        if params.lm_eval_tasks:
            results["lm_eval"] = _lm_eval_passthrough(model, tokenizer, params)
        metrics["models"][label] = results
    metrics["runs"] = [f"{task}|{shots}-shot|{style}" for task, shots, style in runs]
    metrics["base_model"] = model_config.name_or_path
    metrics["adapter"] = adapter_path
    metrics["prompt_styles"] = {
        "plain": "lm-evaluation-harness's own prompt text (comparable with published numbers)",
        "chat": "the chat template and format_prompts templates the fine-tune was trained on",
    }
    return pd.concat(predictions, ignore_index=True), metrics


def _lm_eval_passthrough(model: Any, tokenizer: Any, params: EvaluateParams) -> dict[str, Any]:
    """Run the configured lm-eval tasks with lm-eval itself; its metrics, folded."""
    from gemma_pipeline.evaluation.lm_eval_bridge import fold_results, run_tasks, task_config

    folded = {}
    for spec in params.lm_eval_tasks:
        config = task_config(spec.task, spec.data_files)
        results = run_tasks(
            model,
            tokenizer,
            [config],
            batch_size=params.lm_eval_batch_size,
            num_fewshot=spec.num_fewshot,
        )
        folded |= fold_results(results)
    return folded
