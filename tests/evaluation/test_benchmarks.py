import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gemma_pipeline.evaluation.benchmarks import summarize_benchmarks, task_metrics
from gemma_pipeline.evaluation.tasks.mmlu import CATEGORY_OF


def _mmlu_scores():
    rng = np.random.default_rng(0)
    subjects = ["anatomy"] * 30 + ["philosophy"] * 50 + ["sociology"] * 20
    acc = rng.integers(0, 2, len(subjects)).astype(float)
    return pd.DataFrame({"subject": subjects, "acc": acc, "acc_norm": acc})


def _by(records, metric, level="task", group=None):
    [record] = [
        r for r in records if (r["metric"], r["level"], r["group"]) == (metric, level, group)
    ]
    return record


def test_mmlu_micro_macro_categories_and_subjects():
    scores = _mmlu_scores()
    records = task_metrics("mmlu", scores)
    by_subject = scores.groupby("subject")["acc"]
    assert _by(records, "acc")["value"] == pytest.approx(scores["acc"].mean())
    assert _by(records, "acc")["n"] == 100
    macro = _by(records, "acc_macro")
    assert macro["value"] == pytest.approx(by_subject.mean().mean()) and macro["n"] == 3
    categories = {r["group"] for r in records if r["level"] == "category"}
    assert categories == {CATEGORY_OF[s] for s in ("anatomy", "philosophy", "sociology")}
    humanities = _by(records, "acc", "category", "humanities")
    assert humanities["value"] == pytest.approx(by_subject.mean()["philosophy"])
    anatomy = _by(records, "acc", "subject", "anatomy")
    assert anatomy["stderr"] == pytest.approx(stats.sem(scores["acc"][:30]))
    assert not [r for r in records if r["metric"] == "acc_norm"]  # lm-eval's mmlu: acc only


def test_mathqa_and_gsm8k_report_lm_evals_metrics():
    mathqa = task_metrics("mathqa", pd.DataFrame({"acc": [1.0, 0.0, 1.0], "acc_norm": [0.0] * 3}))
    assert [(r["metric"], r["value"]) for r in mathqa] == [
        ("acc", pytest.approx(2 / 3)),
        ("acc_norm", 0.0),
    ]
    gsm = task_metrics(
        "gsm8k",
        pd.DataFrame(
            {"exact_match_strict-match": [1.0, 0.0], "exact_match_flexible-extract": [1.0, 1.0]}
        ),
    )
    strict = _by(gsm, "exact_match,strict-match")
    assert strict["stderr"] == pytest.approx(stats.sem([1.0, 0.0]))
    assert _by(gsm, "exact_match,flexible-extract")["value"] == 1.0


def _predictions():
    rows = []
    for model, correct in (("base", [0.0, 1.0, 0.0]), ("finetuned", [1.0, 1.0, 0.0])):
        for style in ("plain", "chat"):
            for i, acc in enumerate(correct):
                rows.append(
                    {
                        "row_id": f"r{i}",
                        "subject": "",
                        "acc": acc,
                        "acc_norm": 1.0 - acc,
                        "model": model,
                        "task": "mathqa",
                        "shots": 0,
                        "style": style,
                        "base_model": "tiny",
                        "adapter": "a/b",
                    }
                )
    return pd.DataFrame(rows)


def test_summaries_are_records_in_run_order_for_both_models():
    lm_eval = {
        "models": {
            "base": {
                "arc_easy": {
                    "num_fewshot": 0,
                    "metrics": {"acc,none": {"value": 0.5, "stderr": None}},
                }
            },
        }
    }
    metrics = summarize_benchmarks(_predictions(), lm_eval)
    assert metrics["runs"] == [
        {"task": "mathqa", "shots": 0, "style": "plain"},
        {"task": "mathqa", "shots": 0, "style": "chat"},
    ]
    assert (metrics["base_model"], metrics["adapter"]) == ("tiny", "a/b")
    values = {
        (r["model"], r["style"], r["metric"]): r["value"]
        for r in metrics["records"]
        if r["task"] == "mathqa"
    }
    assert values[("base", "plain", "acc")] == pytest.approx(1 / 3)
    assert values[("finetuned", "chat", "acc")] == pytest.approx(2 / 3)
    assert values[("finetuned", "plain", "acc_norm")] == pytest.approx(1 / 3)
    [arc] = [r for r in metrics["records"] if r["style"] == "lm-eval"]
    assert arc == {
        "task": "arc_easy",
        "shots": 0,
        "style": "lm-eval",
        "model": "base",
        "metric": "acc,none",
        "level": "task",
        "group": None,
        "value": 0.5,
        "stderr": None,
        "n": None,
    }


def test_nothing_to_summarize_is_an_error():
    with pytest.raises(ValueError, match="benchmark_predictions is empty"):
        summarize_benchmarks(pd.DataFrame(), {"models": {}})


def test_every_number_of_both_models_has_a_change_record():
    metrics = summarize_benchmarks(_predictions(), {"models": {}})
    by_kind = {
        (r["model"], r["style"], r["metric"]): r for r in metrics["records"] if r["level"] == "task"
    }
    for style in ("plain", "chat"):
        for metric in ("acc", "acc_norm"):
            base, tuned = by_kind["base", style, metric], by_kind["finetuned", style, metric]
            change = by_kind["change", style, metric]
            assert change["value"] == pytest.approx(tuned["value"] - base["value"])
            assert change["stderr"] == pytest.approx(
                (base["stderr"] ** 2 + tuned["stderr"] ** 2) ** 0.5
            )
            assert change["n"] == 3
