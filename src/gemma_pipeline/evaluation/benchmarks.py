"""Benchmarks end to end: documents → requests → engine → per-document scores → metrics.

Metrics follow lm-evaluation-harness: a task's score is the mean over its documents with the
standard error of that mean; MMLU also reports each subject, each category and the whole both
micro (every question counts once, lm-eval's ``mmlu`` group) and macro (every subject counts
once), with pooled standard errors for the groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gemma_pipeline.prompting import ChatFormat

from . import statistics
from .engine import generate_until, loglikelihood
from .tasks import TASKS, GenerationDoc, MultipleChoiceDoc, PromptStyle, gsm8k
from .tasks.mmlu import CATEGORY_OF


def task_docs(
    questions: pd.DataFrame,
    task: str,
    num_fewshot: int,
    style: PromptStyle,
    chat: ChatFormat | None = None,
) -> list[MultipleChoiceDoc] | list[GenerationDoc]:
    """The task's test documents, few-shot examples drawn from its ``fewshot`` rows."""
    rows = questions[questions["task"] == task]
    test, fewshot = rows[rows["split"] == "test"], rows[rows["split"] == "fewshot"]
    if test.empty:
        raise ValueError(f"benchmark_questions has no test rows of task {task!r}")
    return TASKS[task].build(test, fewshot, num_fewshot, style, chat)


def score_multiple_choice(
    model: Any,
    tokenizer: Any,
    docs: Sequence[MultipleChoiceDoc],
    *,
    max_batch_tokens: int,
    desc: str,
) -> pd.DataFrame:
    """One row per document: the prediction, acc and acc_norm, as lm-eval computes them."""
    requests = [request for doc in docs for request in doc.requests]
    results = loglikelihood(
        model, tokenizer, requests, max_batch_tokens=max_batch_tokens, desc=desc
    )
    rows, cursor = [], 0
    for doc in docs:
        n = len(doc.requests)
        lls = np.array([result.logprob for result in results[cursor : cursor + n]])
        cursor += n
        lengths = np.array([float(len(text)) for text in doc.choice_texts])
        pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lengths))
        rows.append(
            {
                "row_id": doc.row_id,
                "subject": doc.subject,
                "gold": doc.gold,
                "pred": pred,
                "acc": float(pred == doc.gold),
                "acc_norm": float(pred_norm == doc.gold),
                "loglikelihoods": lls.tolist(),
            }
        )
    return pd.DataFrame(rows)


def score_generation(
    model: Any, tokenizer: Any, docs: Sequence[GenerationDoc], *, batch_size: int, desc: str
) -> pd.DataFrame:
    """One row per document: the generation, each filter's answer and its exact match."""
    outputs = generate_until(
        model, tokenizer, [doc.request for doc in docs], batch_size=batch_size, desc=desc
    )
    rows = []
    for doc, output in zip(docs, outputs, strict=True):
        row = {"row_id": doc.row_id, "subject": doc.subject, "output": output}
        for name in gsm8k.FILTERS:
            answer = gsm8k.extract(output, name)
            row[f"answer_{name}"] = answer
            row[f"exact_match_{name}"] = float(gsm8k.exact_match(answer, doc.reference))
        rows.append(row)
    return pd.DataFrame(rows)


def score_benchmark(
    model: Any,
    tokenizer: Any,
    questions: pd.DataFrame,
    task: str,
    num_fewshot: int,
    style: PromptStyle,
    *,
    chat: ChatFormat | None = None,
    max_batch_tokens: int = 16384,
    generation_batch_size: int = 32,
    label: str = "",
) -> pd.DataFrame:
    """Per-document scores of one (task, shots, style)."""
    docs = task_docs(questions, task, num_fewshot, style, chat)
    desc = f"{label} {task} {num_fewshot}-shot {style}".strip()
    if task == "gsm8k":
        return score_generation(model, tokenizer, docs, batch_size=generation_batch_size, desc=desc)
    return score_multiple_choice(
        model, tokenizer, docs, max_batch_tokens=max_batch_tokens, desc=desc
    )


# --- summarizing --------------------------------------------------------------------------------

#: What each prompt style is, for the report.
PROMPT_STYLES = {
    "plain": "lm-evaluation-harness's own prompt text (comparable with published numbers)",
    "chat": "the chat template and format_prompts templates the fine-tune was trained on",
}


def _record(
    metric: str, estimate: statistics.Estimate, level: str = "task", group: str | None = None
) -> dict[str, Any]:
    return {"metric": metric, "level": level, "group": group, **estimate.as_dict()}


def task_metrics(task: str, scores: pd.DataFrame) -> list[dict[str, Any]]:
    """lm-eval's metrics of one (task, shots, style) from its per-document scores, as records
    (metric, level, group, value, stderr, n): MMLU also per category and per subject."""
    if task == "gsm8k":
        return [
            _record(f"exact_match,{name}", statistics.mean(scores[f"exact_match_{name}"]))
            for name in gsm8k.FILTERS
        ]
    acc = statistics.mean(scores["acc"])
    if task == "mathqa":  # lm-eval's metrics: mathqa acc and acc_norm, mmlu acc
        return [_record("acc", acc), _record("acc_norm", statistics.mean(scores["acc_norm"]))]
    subjects = {
        subject: statistics.mean(rows["acc"])
        for subject, rows in scores.groupby("subject", sort=True)
    }
    category_of = {subject: CATEGORY_OF.get(subject, "unmapped") for subject in subjects}
    categories = {
        category: statistics.pooled([m for s, m in subjects.items() if category_of[s] == category])
        for category in sorted(set(category_of.values()))
    }
    # acc is the micro average (every question once); lm-eval gives it the pooled standard error
    # (undefined when a subject has one question: then the plain one stays).
    pooled = statistics.pooled(list(subjects.values()))
    if pooled.stderr is not None:
        acc = statistics.Estimate(acc.value, pooled.stderr, acc.n)
    return [
        _record("acc", acc),
        _record("acc_macro", statistics.mean_of_means(list(subjects.values()))),
        *(_record("acc", m, "category", c) for c, m in categories.items()),
        *(_record("acc", m, "subject", s) for s, m in subjects.items()),
    ]


RUN_KEYS = ["task", "shots", "style"]


def summarize_benchmarks(
    predictions: pd.DataFrame, lm_eval_results: dict[str, Any]
) -> dict[str, Any]:
    """``benchmark_metrics``: one record per (task, shots, style, model, metric, level, group),
    from the stored per-document predictions, and the lm-eval pass-through's own metrics.

    ``model`` is ``base``, ``finetuned``, or ``change``: fine-tuned minus base, with the
    standard error of a difference of independent estimates (conservative: both models
    answered the same documents).
    """
    if predictions.empty and not lm_eval_results.get("models"):
        raise ValueError("benchmark_predictions is empty and lm-eval ran no task")
    runs = predictions[RUN_KEYS].drop_duplicates().to_dict(orient="records")
    records = []
    for label in ("base", "finetuned"):
        mine = predictions[predictions["model"] == label]
        for run in runs:
            rows = mine[(mine[RUN_KEYS] == pd.Series(run)).all(axis=1)]
            identity = {**run, "shots": int(run["shots"]), "model": label}
            records += [{**identity, **record} for record in task_metrics(run["task"], rows)]
        for task, spec in (lm_eval_results.get("models", {}).get(label) or {}).items():
            records += [
                {"task": task, "shots": spec["num_fewshot"], "style": "lm-eval", "model": label}
                | _record(metric, statistics.Estimate(value["value"], value["stderr"], None))
                for metric, value in spec["metrics"].items()
            ]
    records += _changes(records)
    first = predictions.iloc[0] if not predictions.empty else {}
    return {
        "base_model": first.get("base_model", lm_eval_results.get("base_model")),
        "adapter": first.get("adapter", lm_eval_results.get("adapter")),
        "prompt_styles": PROMPT_STYLES,
        "runs": [{**run, "shots": int(run["shots"])} for run in runs],
        "records": records,
    }


def _changes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ``change`` record for every number both models have."""
    by_number: dict[tuple, dict[str, dict[str, Any]]] = {}
    for record in records:
        number = tuple(record[k] for k in (*RUN_KEYS, "metric", "level", "group"))
        by_number.setdefault(number, {})[record["model"]] = record
    changes = []
    for models in by_number.values():
        if {"base", "finetuned"} <= set(models):
            base, tuned = (
                statistics.Estimate(models[m]["value"], models[m]["stderr"], models[m]["n"])
                for m in ("base", "finetuned")
            )
            change = statistics.independent_difference(tuned, base)
            changes.append({**models["base"], "model": "change", **change.as_dict()})
    return changes
