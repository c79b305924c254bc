"""The held-out diagnostics: what the fine-tune changed on questions training never saw.

Scoring (needs a model): each held-out question's chat prompt (``prompts``, the exact training
format) becomes requests to the engine's ``loglikelihood`` with the context kept intact:

- each answer letter as the model turn's first token: letter accuracy, and the probability
  mass on the offered letters;
- each option's text: option accuracy, and per byte (lm-eval's ``acc_norm``);
- the reference completion: its perplexity.

Summarizing (pure, seconds): per task, every metric for base and fine-tuned with standard
errors, the change on paired questions, the spread of predicted letters, and per subject.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gemma_pipeline.sources.schema import LETTERS

from . import statistics
from .engine import LoglikelihoodRequest, LoglikelihoodResult, loglikelihood

#: (column of the predictions, name in reports), for metrics that are per-question means.
MEAN_METRICS = [
    ("letter_correct", "letter_acc"),
    ("option_correct", "option_acc"),
    ("option_norm_correct", "option_acc_norm"),
    ("letter_mass", "letter_prob_mass"),
]


def option_requests(prompt: str, choices: Sequence[str]) -> list[LoglikelihoodRequest]:
    """Each answer letter, then each option's text, after the intact prompt (whose tokens run
    through the model once: it is every request's shared prefix)."""
    continuations = [*LETTERS[: len(choices)], *choices]
    return [
        LoglikelihoodRequest(prompt, text, shared_prefix=prompt, intact_context=True)
        for text in continuations
    ]


def _requests(question: pd.Series) -> list[LoglikelihoodRequest]:
    """The options' requests, then the reference completion's."""
    prompt = question["prompt"]
    return [
        *option_requests(prompt, list(question["choices"])),
        LoglikelihoodRequest(
            prompt, question["completion"], shared_prefix=prompt, intact_context=True
        ),
    ]


@dataclass(frozen=True)
class OptionScores:
    """How a model rates one question's options, as the held-out metrics read it."""

    letter_logprobs: list[float]  # log p(letter | prompt): the model turn's first token
    option_logprobs: list[float]  # log p(option text | prompt)
    per_byte: list[float]  # option_logprobs / UTF-8 bytes: lm-eval's acc_norm

    @classmethod
    def from_results(
        cls, results: Sequence[LoglikelihoodResult], choices: Sequence[str]
    ) -> OptionScores:
        n = len(choices)
        letters, options = results[:n], results[n : 2 * n]
        for letter, result in zip(LETTERS, letters, strict=False):
            if result.tokens != 1:
                raise ValueError(f"Answer letter {letter!r} is not a single token")
        option_logprobs = [result.logprob for result in options]
        return cls(
            letter_logprobs=[result.logprob for result in letters],
            option_logprobs=option_logprobs,
            per_byte=[
                logprob / max(1, len(text.encode("utf-8")))
                for logprob, text in zip(option_logprobs, choices, strict=True)
            ],
        )

    @property
    def letter_probabilities(self) -> list[float]:
        """p(letter), renormalized over the letters offered."""
        logprobs = np.array(self.letter_logprobs)
        weights = np.exp(logprobs - logprobs.max())
        return (weights / weights.sum()).tolist()


def score_options(
    model: Any, tokenizer: Any, prompt: str, choices: Sequence[str], *, max_batch_tokens: int
) -> OptionScores:
    """One question's option scores, computed as :func:`score_heldout` computes them."""
    results = loglikelihood(
        model,
        tokenizer,
        option_requests(prompt, choices),
        max_batch_tokens=max_batch_tokens,
        desc="options",
    )
    return OptionScores.from_results(results, choices)


def score_heldout(
    model: Any,
    tokenizer: Any,
    questions: pd.DataFrame,
    *,
    max_batch_tokens: int,
    desc: str = "held-out",
) -> pd.DataFrame:
    """One row per question: predictions, correctness, letter mass and completion NLL."""
    per_question = [_requests(question) for _, question in questions.iterrows()]
    results = loglikelihood(
        model,
        tokenizer,
        [request for requests in per_question for request in requests],
        max_batch_tokens=max_batch_tokens,
        desc=desc,
    )
    rows, cursor = [], 0
    for (_, question), requests in zip(questions.iterrows(), per_question, strict=True):
        answer, choices = int(question["answer"]), list(question["choices"])
        n = len(choices)
        scored = results[cursor : cursor + len(requests)]
        cursor += len(requests)
        options, completion = OptionScores.from_results(scored, choices), scored[2 * n]
        letter_logprobs, option_logprobs = options.letter_logprobs, options.option_logprobs
        letter_pred = int(np.argmax(letter_logprobs))
        rows.append(
            {
                "row_id": question["row_id"],
                "task": question["task"],
                "subject": question["subject"] or "(none)",
                "answer": answer,
                "n_choices": n,
                "letter_logprobs": letter_logprobs,
                "option_logprobs": option_logprobs,
                "letter_pred": LETTERS[letter_pred],
                "letter_correct": float(letter_pred == answer),
                "option_correct": float(int(np.argmax(option_logprobs)) == answer),
                "option_norm_correct": float(int(np.argmax(options.per_byte)) == answer),
                "letter_mass": float(np.exp(letter_logprobs).sum()),
                "completion_nll": -completion.logprob,
                "completion_tokens": completion.tokens,
            }
        )
    return pd.DataFrame(rows)


# --- summarizing --------------------------------------------------------------------------------


def letter_spread(predictions: pd.DataFrame, n_letters: int) -> dict[str, Any]:
    """Share of each predicted letter, and its entropy over the letters offered (1 = uniform)."""
    letters = list(LETTERS[:n_letters])
    counts = predictions["letter_pred"].value_counts().reindex(letters, fill_value=0)
    shares = counts / max(1, counts.sum())
    nonzero = shares[shares > 0]
    # + 0.0 turns the -0.0 of a one-letter model into 0.0.
    entropy = float(-(nonzero * np.log(nonzero)).sum() / math.log(n_letters)) + 0.0
    return {
        "shares": {letter: float(share) for letter, share in shares.items()},
        "max_share": float(shares.max()),
        "entropy": entropy,
    }


def _row(
    metric: str,
    base: statistics.Estimate,
    finetuned: statistics.Estimate,
    change: statistics.Estimate,
    paired: bool,
) -> dict[str, Any]:
    return {
        "metric": metric,
        "base": base.value,
        "base_se": base.stderr,
        "finetuned": finetuned.value,
        "finetuned_se": finetuned.stderr,
        "change": change.value,
        "change_se": change.stderr,
        "paired": paired,
    }


def compare(base: pd.DataFrame, finetuned: pd.DataFrame, n_letters: int) -> dict[str, Any]:
    """The results table of one task: every metric for both models, and the change."""
    merged = base.merge(finetuned, on="row_id", suffixes=("_base", "_ft"), validate="1:1")
    rows = []
    for column, name in MEAN_METRICS:
        before, after = merged[f"{column}_base"], merged[f"{column}_ft"]
        change = statistics.paired_difference(after, before)
        rows.append(_row(name, statistics.mean(before), statistics.mean(after), change, True))
    base_ppl = statistics.perplexity(base["completion_nll"], base["completion_tokens"])
    ft_ppl = statistics.perplexity(finetuned["completion_nll"], finetuned["completion_tokens"])
    change = statistics.independent_difference(ft_ppl, base_ppl)
    rows.append(_row("completion_perplexity", base_ppl, ft_ppl, change, False))
    base_spread, ft_spread = letter_spread(base, n_letters), letter_spread(finetuned, n_letters)
    entropy = {
        label: statistics.Estimate(spread["entropy"], None, len(merged))
        for label, spread in (("base", base_spread), ("finetuned", ft_spread))
    }
    change = statistics.independent_difference(entropy["finetuned"], entropy["base"])
    rows.append(
        _row("predicted_letter_entropy", entropy["base"], entropy["finetuned"], change, False)
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
        before, after = group["letter_correct_base"], group["letter_correct_ft"]
        base, tuned = statistics.mean(before), statistics.mean(after)
        change = statistics.paired_difference(after, before)
        rows.append(
            {
                "subject": subject,
                "n": len(group),
                "base": base.value,
                "base_se": base.stderr,
                "finetuned": tuned.value,
                "finetuned_se": tuned.stderr,
                "change": change.value,
                "change_se": change.stderr,
            }
        )
    return rows


def summarize_heldout(predictions: pd.DataFrame) -> dict[str, Any]:
    """``heldout_metrics``: per task, base against fine-tuned, from the stored predictions."""
    by_model = {label: rows for label, rows in predictions.groupby("model", sort=False)}
    missing = {"base", "finetuned"} - set(by_model)
    if missing:
        raise ValueError(f"heldout_predictions has no rows of model(s) {sorted(missing)}")
    first = predictions.iloc[0]
    metrics: dict[str, Any] = {
        "split": first["split"],
        "base_model": first["base_model"],
        "adapter": first["adapter"],
        "tasks": {},
    }
    for task, rows in predictions.groupby("task", sort=True):
        metrics["tasks"][task] = compare(
            rows[rows["model"] == "base"],
            rows[rows["model"] == "finetuned"],
            int(rows["n_choices"].max()),
        )
    return metrics
