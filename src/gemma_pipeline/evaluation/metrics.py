"""Per-question results → accuracies, perplexity and letter statistics with standard errors.

Standard errors are those of a mean over questions (sample std with ddof=1 over sqrt(n)), as
lm-evaluation-harness reports them. Base and fine-tuned are scored on the same questions, so
changes in per-question metrics use the paired differences' standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gemma_pipeline.sources.schema import LETTERS

from .scoring import ItemScore

#: (column in the per-question table, name in reports), for metrics that are per-question means.
MEAN_METRICS = [
    ("letter_correct", "letter_acc"),
    ("option_correct", "option_acc"),
    ("option_norm_correct", "option_acc_norm"),
    ("letter_mass", "letter_prob_mass"),
]


def per_question_results(questions: pd.DataFrame, scores: Sequence[ItemScore]) -> pd.DataFrame:
    """One row per question: predictions, correctness, letter mass, completion NLL."""
    rows = []
    for (_, question), score in zip(questions.iterrows(), scores, strict=True):
        answer = int(question["answer"])
        choices = list(question["choices"])
        letter_pred = int(np.argmax(score.letter_logprobs))
        option_pred = int(np.argmax(score.option_logprobs))
        # acc_norm as in lm-eval: log-likelihood per byte of the option text.
        per_byte = [
            logprob / max(1, len(text.encode("utf-8")))
            for logprob, text in zip(score.option_logprobs, choices, strict=True)
        ]
        option_norm_pred = int(np.argmax(per_byte))
        rows.append(
            {
                "row_id": question["row_id"],
                "task": question["task"],
                "subject": question["subject"] or "(none)",
                "answer": answer,
                "letter_pred": LETTERS[letter_pred],
                "letter_correct": float(letter_pred == answer),
                "option_correct": float(option_pred == answer),
                "option_norm_correct": float(option_norm_pred == answer),
                "letter_mass": score.letter_mass,
                "completion_nll": score.completion_nll,
                "completion_tokens": score.completion_tokens,
            }
        )
    return pd.DataFrame(rows)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: undefined values (an SE of one question) become null."""
    return None if value is None or math.isnan(value) else float(value)


def mean_with_stderr(values: pd.Series) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    stderr = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(values.mean()), stderr


def perplexity_with_stderr(results: pd.DataFrame) -> tuple[float, float]:
    """Token-weighted perplexity over completions and its delta-method standard error.

    log-ppl is a ratio of sums (NLL over tokens); its standard error is the ratio estimator's.
    """
    nll, tokens = results["completion_nll"], results["completion_tokens"]
    n = len(results)
    if n == 0 or tokens.sum() == 0:
        return math.nan, math.nan
    log_ppl = nll.sum() / tokens.sum()
    residual = nll - log_ppl * tokens
    log_stderr = math.sqrt((residual**2).sum() / max(1, n - 1) * n) / tokens.sum()
    ppl = math.exp(log_ppl)
    return ppl, ppl * log_stderr


def letter_spread(results: pd.DataFrame, n_letters: int) -> dict[str, Any]:
    """Share of each predicted letter, and its entropy over the letters offered (1 = uniform)."""
    letters = list(LETTERS[:n_letters])
    counts = results["letter_pred"].value_counts().reindex(letters, fill_value=0)
    shares = counts / max(1, counts.sum())
    nonzero = shares[shares > 0]
    # + 0.0 turns the -0.0 of a one-letter model into 0.0.
    entropy = float(-(nonzero * np.log(nonzero)).sum() / math.log(n_letters)) + 0.0
    return {
        "shares": {letter: float(share) for letter, share in shares.items()},
        "max_share": float(shares.max()),
        "entropy": entropy,
    }


def compare(base: pd.DataFrame, finetuned: pd.DataFrame, n_letters: int) -> dict[str, Any]:
    """The results table of one task: every metric for both models, and the change."""
    merged = base.merge(finetuned, on="row_id", suffixes=("_base", "_ft"), validate="1:1")
    rows = []
    for column, name in MEAN_METRICS:
        base_value, base_se = mean_with_stderr(merged[f"{column}_base"])
        ft_value, ft_se = mean_with_stderr(merged[f"{column}_ft"])
        change, change_se = mean_with_stderr(merged[f"{column}_ft"] - merged[f"{column}_base"])
        rows.append(_row(name, base_value, base_se, ft_value, ft_se, change, change_se, True))
    base_ppl, base_ppl_se = perplexity_with_stderr(base)
    ft_ppl, ft_ppl_se = perplexity_with_stderr(finetuned)
    rows.append(
        _row(
            "completion_perplexity",
            base_ppl,
            base_ppl_se,
            ft_ppl,
            ft_ppl_se,
            ft_ppl - base_ppl,
            math.hypot(base_ppl_se, ft_ppl_se),
            False,
        )
    )
    base_spread, ft_spread = letter_spread(base, n_letters), letter_spread(finetuned, n_letters)
    rows.append(
        _row(
            "predicted_letter_entropy",
            base_spread["entropy"],
            math.nan,
            ft_spread["entropy"],
            math.nan,
            ft_spread["entropy"] - base_spread["entropy"],
            math.nan,
            False,
        )
    )
    return {
        "n": len(merged),
        "metrics": rows,
        "letter_spread": {"base": base_spread, "finetuned": ft_spread},
        "per_subject": per_subject(merged),
    }


def per_subject(merged: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for subject, group in merged.groupby("subject_base", sort=True):
        base_value, base_se = mean_with_stderr(group["letter_correct_base"])
        ft_value, ft_se = mean_with_stderr(group["letter_correct_ft"])
        change, change_se = mean_with_stderr(
            group["letter_correct_ft"] - group["letter_correct_base"]
        )
        rows.append(
            {
                "subject": subject,
                "n": len(group),
                "base": finite_or_none(base_value),
                "base_se": finite_or_none(base_se),
                "finetuned": finite_or_none(ft_value),
                "finetuned_se": finite_or_none(ft_se),
                "change": finite_or_none(change),
                "change_se": finite_or_none(change_se),
            }
        )
    return rows


def _row(
    metric: str,
    base: float,
    base_se: float,
    finetuned: float,
    finetuned_se: float,
    change: float,
    change_se: float,
    paired: bool,
) -> dict[str, Any]:
    return {
        "metric": metric,
        "base": finite_or_none(base),
        "base_se": finite_or_none(base_se),
        "finetuned": finite_or_none(finetuned),
        "finetuned_se": finite_or_none(finetuned_se),
        "change": finite_or_none(change),
        "change_se": finite_or_none(change_se),
        "paired": paired,
    }
