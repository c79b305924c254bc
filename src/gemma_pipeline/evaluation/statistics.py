"""Every estimate the project reports: means, their standard errors, and their differences.

One rule for all of them: a value that is not defined is ``None`` (JSON's null), never NaN.
The mean of no values is ``None``; the standard error of fewer than two is ``None``.

Standard errors are those of a mean over documents (sample std with ddof=1 over sqrt(n)), as
lm-evaluation-harness reports them; groups of subsets (MMLU's categories and whole) use
lm-eval's pooled standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Estimate:
    value: float | None
    stderr: float | None
    n: int | None  # None: not known (a number reported by lm-eval itself)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def mean(values: Sequence[float] | np.ndarray) -> Estimate:
    """The mean and the standard error of the mean."""
    array = np.asarray(values, dtype=float)
    n = len(array)
    if n == 0:
        return Estimate(None, None, 0)
    stderr = _finite(array.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    return Estimate(_finite(array.mean()), stderr, n)


def paired_difference(after: Sequence[float], before: Sequence[float]) -> Estimate:
    """Mean of ``after - before`` over the same documents, with the paired standard error."""
    after, before = np.asarray(after, dtype=float), np.asarray(before, dtype=float)
    if after.shape != before.shape:
        raise ValueError(f"paired values differ in number: {len(after)} and {len(before)}")
    return mean(after - before)


def pooled(parts: Sequence[Estimate]) -> Estimate:
    """The size-weighted mean of subsets, with lm-eval's ``pooled_sample_stderr``.

    lm-eval 0.4.13 gives a group (MMLU's categories and ``mmlu``) the standard error of the
    pooled within-subset variance, ``sum((n_i - 1) s_i^2) / (N - k)`` over ``N``, where
    ``s_i^2 = n_i stderr_i^2``. It is ``None`` when any part has none or the parts hold no more
    documents than there are parts.
    """
    parts = [part for part in parts if part.n]
    total = sum(part.n for part in parts)
    if total == 0:
        return Estimate(None, None, 0)
    value = sum(part.value * part.n for part in parts) / total
    if total - len(parts) <= 0 or any(part.stderr is None for part in parts):
        return Estimate(value, None, total)
    variance = sum((part.n - 1) * part.stderr**2 * part.n for part in parts) / (total - len(parts))
    return Estimate(value, math.sqrt(variance / total), total)


def mean_of_means(parts: Sequence[Estimate]) -> Estimate:
    """The unweighted mean of independent subset means (MMLU's macro average); ``n`` counts
    the subsets. A subset without a standard error contributes none to it."""
    parts = [part for part in parts if part.value is not None]
    if not parts:
        return Estimate(None, None, 0)
    value = float(np.mean([part.value for part in parts]))
    stderr = math.sqrt(sum((part.stderr or 0.0) ** 2 for part in parts)) / len(parts)
    return Estimate(value, stderr, len(parts))


def perplexity(nll: Sequence[float], tokens: Sequence[int]) -> Estimate:
    """Token-weighted perplexity ``exp(sum nll / sum tokens)`` over documents, with the
    delta-method standard error of that ratio estimator; ``n`` counts documents."""
    nll, tokens = np.asarray(nll, dtype=float), np.asarray(tokens, dtype=float)
    n = len(nll)
    if n == 0 or tokens.sum() == 0:
        return Estimate(None, None, n)
    log_ppl = nll.sum() / tokens.sum()
    value = math.exp(log_ppl)
    if n < 2:
        return Estimate(value, None, n)
    residual = nll - log_ppl * tokens
    log_stderr = math.sqrt((residual**2).sum() / (n - 1) * n) / tokens.sum()
    return Estimate(value, value * log_stderr, n)


def independent_difference(after: Estimate, before: Estimate) -> Estimate:
    """``after - before`` of two estimates from independent samples (SEs add in quadrature)."""
    n = None if after.n is None or before.n is None else min(after.n, before.n)
    if after.value is None or before.value is None:
        return Estimate(None, None, n)
    stderr = (
        math.hypot(after.stderr, before.stderr)
        if after.stderr is not None and before.stderr is not None
        else None
    )
    return Estimate(after.value - before.value, stderr, n)
