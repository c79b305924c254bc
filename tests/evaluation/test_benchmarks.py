import math

import numpy as np
import pandas as pd
import pytest

from gemma_pipeline.evaluation.benchmarks import mean_and_stderr, pooled_stderr, summarize


def _mmlu_scores():
    rng = np.random.default_rng(0)
    subjects = ["anatomy"] * 30 + ["philosophy"] * 50 + ["sociology"] * 20
    acc = rng.integers(0, 2, len(subjects)).astype(float)
    return pd.DataFrame({"subject": subjects, "acc": acc, "acc_norm": acc})


def test_mmlu_micro_macro_and_categories():
    scores = _mmlu_scores()
    summary = summarize("mmlu", scores)
    assert summary["acc"]["value"] == pytest.approx(scores["acc"].mean())
    by_subject = scores.groupby("subject")["acc"].mean()
    assert summary["acc_macro"]["value"] == pytest.approx(by_subject.mean())
    assert summary["acc_macro"]["n"] == 3
    assert set(summary["categories"]) == {"stem", "humanities", "social_sciences"}
    assert summary["categories"]["humanities"]["value"] == pytest.approx(by_subject["philosophy"])
    assert "acc_norm" not in summary  # lm-eval's mmlu reports acc only


def test_pooled_stderr_of_one_group_is_its_own():
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    single = mean_and_stderr(values)
    assert pooled_stderr([single]) == pytest.approx(single["stderr"])


def test_pooled_stderr_matches_the_stderr_of_all_rows_for_equal_means():
    a, b = [1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    pooled = pooled_stderr([mean_and_stderr(a), mean_and_stderr(b)])
    assert pooled == pytest.approx(mean_and_stderr(a + b)["stderr"])
    assert pooled_stderr([mean_and_stderr([1.0]), mean_and_stderr(a)]) is None


def test_gsm8k_reports_each_filter():
    scores = pd.DataFrame(
        {"exact_match_strict-match": [1.0, 0.0], "exact_match_flexible-extract": [1.0, 1.0]}
    )
    summary = summarize("gsm8k", scores)
    assert summary["exact_match,flexible-extract"]["value"] == 1.0
    assert summary["exact_match,strict-match"]["stderr"] == pytest.approx(0.5)
    assert not math.isnan(summary["exact_match,strict-match"]["value"])
