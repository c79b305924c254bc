"""Means, standard errors and differences, each checked against a computation done another way."""

import math
import statistics as stdlib

import numpy as np
import pytest
from scipy import stats

from gemma_pipeline.evaluation import statistics
from gemma_pipeline.evaluation.statistics import Estimate

VALUES = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]


def test_mean_and_its_stderr_agree_with_scipy():
    estimate = statistics.mean(VALUES)
    assert estimate.value == pytest.approx(stdlib.fmean(VALUES))
    assert estimate.stderr == pytest.approx(stats.sem(VALUES))
    assert estimate.n == len(VALUES)


def test_one_rule_for_empty_and_single_inputs():
    assert statistics.mean([]) == Estimate(None, None, 0)
    assert statistics.mean([0.5]) == Estimate(0.5, None, 1)
    assert statistics.pooled([]) == Estimate(None, None, 0)
    assert statistics.mean_of_means([]) == Estimate(None, None, 0)
    assert statistics.perplexity([], []) == Estimate(None, None, 0)
    assert statistics.perplexity([2.0], [4]).stderr is None
    assert statistics.independent_difference(Estimate(None, None, 0), Estimate(1.0, 0.1, 5)) == (
        Estimate(None, None, 0)
    )


def test_paired_difference_is_the_ttest_of_the_differences():
    after, before = [1, 1, 0, 1, 1, 0, 1], [0, 1, 0, 0, 1, 1, 0]
    change = statistics.paired_difference(after, before)
    result = stats.ttest_rel(after, before)
    assert change.value == pytest.approx(np.mean(np.subtract(after, before)))
    # t = mean / se, so the paired SE is mean / t.
    assert change.stderr == pytest.approx(change.value / result.statistic)
    with pytest.raises(ValueError, match="differ in number"):
        statistics.paired_difference([1.0], [1.0, 0.0])


GROUPS = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]


def test_pooled_is_the_size_weighted_mean_with_the_pooled_within_group_variance():
    pooled = statistics.pooled([statistics.mean(g) for g in GROUPS])
    everything = [x for g in GROUPS for x in g]
    assert pooled.value == pytest.approx(stdlib.fmean(everything))
    assert pooled.n == len(everything)
    within = sum((len(g) - 1) * stdlib.variance(g) for g in GROUPS) / (len(everything) - 3)
    assert pooled.stderr == pytest.approx(math.sqrt(within / len(everything)))


def test_pooled_stderr_is_lm_evals_own():
    lm_eval_metrics = pytest.importorskip("lm_eval.api.metrics")
    estimates = [statistics.mean(g) for g in GROUPS]
    theirs = lm_eval_metrics.pooled_sample_stderr(
        [e.stderr for e in estimates], [e.n for e in estimates]
    )
    assert statistics.pooled(estimates).stderr == pytest.approx(float(theirs))
    # One subset with a single document has no standard error, so neither has the group.
    assert statistics.pooled([statistics.mean([1.0]), estimates[0]]).stderr is None


def test_mean_of_means_is_the_unweighted_mean_of_independent_means():
    groups = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
    macro = statistics.mean_of_means([statistics.mean(g) for g in groups])
    assert macro.value == pytest.approx(stdlib.fmean([stdlib.fmean(g) for g in groups]))
    variance = sum(stats.sem(g) ** 2 for g in groups) / len(groups) ** 2
    assert macro.stderr == pytest.approx(math.sqrt(variance))
    assert macro.n == 3


def test_perplexity_is_token_weighted_with_the_ratio_estimators_stderr():
    nll, tokens = [2.0, 6.0, 3.0], [2, 2, 4]
    estimate = statistics.perplexity(nll, tokens)
    assert estimate.value == pytest.approx(math.exp(11 / 8))
    # The delta method against a bootstrap of documents: the same to within sampling noise.
    rng = np.random.default_rng(0)
    picks = rng.integers(0, 3, size=(20000, 3))
    log_ppl = np.take(nll, picks).sum(1) / np.take(tokens, picks).sum(1)
    assert estimate.stderr / estimate.value == pytest.approx(log_ppl.std(), rel=0.25)


def test_independent_difference_adds_errors_in_quadrature():
    change = statistics.independent_difference(Estimate(0.6, 0.03, 50), Estimate(0.5, 0.04, 40))
    assert change.value == pytest.approx(0.1)
    assert change.stderr == pytest.approx(0.05)
    assert (
        statistics.independent_difference(Estimate(1, None, 2), Estimate(0, 0.1, 2)).stderr is None
    )
