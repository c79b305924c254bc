import math

import pandas as pd
import pytest

from gemma_pipeline.evaluation.metrics import (
    compare,
    letter_spread,
    mean_with_stderr,
    perplexity_with_stderr,
)


def _results(correct, preds, nll=None, tokens=None, subject="s"):
    n = len(correct)
    return pd.DataFrame(
        {
            "row_id": [f"r{i}" for i in range(n)],
            "task": ["mmlu"] * n,
            "subject": [subject] * n,
            "answer": [0] * n,
            "letter_pred": preds,
            "letter_correct": [float(c) for c in correct],
            "option_correct": [1.0] * n,
            "option_norm_correct": [0.0] * n,
            "letter_mass": [0.5] * n,
            "completion_nll": nll or [2.0] * n,
            "completion_tokens": tokens or [4] * n,
        }
    )


def test_mean_and_stderr_match_the_textbook_formula():
    mean, stderr = mean_with_stderr(pd.Series([1.0, 0.0, 1.0, 1.0]))
    assert mean == 0.75
    assert stderr == pytest.approx(math.sqrt(0.25 / 4))  # sample var 0.25, n = 4


def test_perplexity_is_token_weighted():
    results = _results([1, 1], ["A", "A"], nll=[2.0, 6.0], tokens=[2, 2])
    ppl, stderr = perplexity_with_stderr(results)
    assert ppl == pytest.approx(math.exp(8.0 / 4))
    assert stderr > 0


def test_letter_spread_flags_collapse():
    collapsed = letter_spread(_results([1, 0, 0, 0], ["A"] * 4), 4)
    uniform = letter_spread(_results([1, 1, 1, 1], list("ABCD")), 4)
    assert collapsed["max_share"] == 1.0 and str(collapsed["entropy"]) == "0.0"  # not "-0.0"
    assert uniform["max_share"] == 0.25 and uniform["entropy"] == pytest.approx(1.0)


def test_compare_uses_paired_differences():
    base = _results([0, 0, 1, 0, 0, 1], list("AAAAAA"))
    finetuned = _results([1, 1, 1, 0, 1, 1], list("ABCDAB"))
    table = compare(base, finetuned, n_letters=4)
    letter = next(row for row in table["metrics"] if row["metric"] == "letter_acc")
    assert letter["change"] == pytest.approx(3 / 6)
    diffs = pd.Series([1, 1, 0, 0, 1, 0], dtype=float)
    assert letter["change_se"] == pytest.approx(diffs.std(ddof=1) / math.sqrt(6))
    assert table["n"] == 6
    assert table["letter_spread"]["base"]["max_share"] == 1.0
    assert table["per_subject"][0]["subject"] == "s"
    assert {row["metric"] for row in table["metrics"]} >= {
        "letter_acc",
        "option_acc",
        "letter_prob_mass",
        "completion_perplexity",
        "predicted_letter_entropy",
    }
