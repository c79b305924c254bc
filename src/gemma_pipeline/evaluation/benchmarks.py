"""Benchmarks end to end: documents → requests → engine → per-document scores → metrics.

Metrics follow lm-evaluation-harness: a task's score is the mean over its documents with the
standard error of that mean; MMLU also reports each subject, each category and the whole both
micro (every question counts once, lm-eval's ``mmlu`` group) and macro (every subject counts
once), with pooled standard errors for the groups.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .engine import generate_until, loglikelihood
from .tasks import TASKS, ChatFormat, GenerationDoc, MultipleChoiceDoc, PromptStyle, gsm8k
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


def run_benchmark(
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
) -> tuple[pd.DataFrame, float]:
    """Per-document scores of one (task, shots, style), and the seconds it took."""
    docs = task_docs(questions, task, num_fewshot, style, chat)
    desc = f"{label} {task} {num_fewshot}-shot {style}".strip()
    started = time.perf_counter()
    if task == "gsm8k":
        scores = score_generation(
            model, tokenizer, docs, batch_size=generation_batch_size, desc=desc
        )
    else:
        scores = score_multiple_choice(
            model, tokenizer, docs, max_batch_tokens=max_batch_tokens, desc=desc
        )
    return scores, time.perf_counter() - started


# --- aggregation ------------------------------------------------------------------------------


def mean_and_stderr(values: Sequence[float] | pd.Series) -> dict[str, float | None]:
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    stderr = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    return {"value": mean, "stderr": stderr, "n": n}


def pooled_stderr(parts: Sequence[dict[str, Any]]) -> float | None:
    """lm-eval's ``pooled_sample_stderr``: the SE of the size-weighted mean of subgroups."""
    sizes = [p["n"] for p in parts]
    if sum(sizes) - len(parts) <= 0 or any(p["stderr"] is None for p in parts):
        return None
    total = sum(sizes)
    mean = sum(p["value"] * n for p, n in zip(parts, sizes, strict=True)) / total
    variance = sum(
        (n - 1) * (p["stderr"] ** 2 * n) + n * (p["value"] - mean) ** 2
        for p, n in zip(parts, sizes, strict=True)
    ) / (total - 1)
    return math.sqrt(variance / total)


def summarize(task: str, scores: pd.DataFrame) -> dict[str, Any]:
    """Metrics of one (task, shots, style) from its per-document scores."""
    if task == "gsm8k":
        return {
            f"exact_match,{name}": mean_and_stderr(scores[f"exact_match_{name}"])
            for name in gsm8k.FILTERS
        }
    summary: dict[str, Any] = {"acc": mean_and_stderr(scores["acc"])}
    if task == "mathqa":  # lm-eval's metrics: mathqa acc and acc_norm, mmlu acc
        summary["acc_norm"] = mean_and_stderr(scores["acc_norm"])
        return summary
    subjects = {
        subject: mean_and_stderr(rows["acc"])
        for subject, rows in scores.groupby("subject", sort=True)
    }
    categories: dict[str, Any] = {}
    for category in sorted({CATEGORY_OF.get(s, "unmapped") for s in subjects}):
        parts = [m for s, m in subjects.items() if CATEGORY_OF.get(s, "unmapped") == category]
        categories[category] = {
            "value": sum(p["value"] * p["n"] for p in parts) / sum(p["n"] for p in parts),
            "stderr": pooled_stderr(parts),
            "n": sum(p["n"] for p in parts),
        }
    # acc is the micro average (every question once); lm-eval gives it the pooled standard error
    # (undefined when a subject has one question: then the plain one stays).
    pooled = pooled_stderr(list(subjects.values()))
    if pooled is not None:
        summary["acc"]["stderr"] = pooled
    summary["acc_macro"] = {
        "value": float(np.mean([m["value"] for m in subjects.values()])),
        # The mean of independent subject means: its SE from theirs.
        "stderr": math.sqrt(sum((m["stderr"] or 0.0) ** 2 for m in subjects.values()))
        / len(subjects),
        "n": len(subjects),
    }
    summary["categories"] = categories
    summary["subjects"] = subjects
    return summary
