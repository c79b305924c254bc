"""The benchmark sections: records paired by number and model, rows in ``runs`` order, MMLU by
category, lm-eval's own tasks, and malformed records named, on a small hand-written file."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from gemma_pipeline.reporting.benchmarks import (
    benchmark_blocks,
    benchmark_table_rows,
    paired_records,
)
from gemma_pipeline.reporting.blocks import render_markdown_blocks
from gemma_pipeline.reporting.formatting import format_estimate, format_number


def _markdown(bench: dict[str, Any], rejected_rows: int = 0) -> str:
    return render_markdown_blocks(
        benchmark_blocks(bench, significance_se=2.0, rejected_rows=rejected_rows)
    )


def _record(bench: dict, **match) -> dict:
    (record,) = [r for r in bench["records"] if all(r[k] == v for k, v in match.items())]
    return record


def test_benchmark_rows_follow_runs_and_compare_the_models(benchmark_metrics):
    bench = benchmark_metrics
    rows = benchmark_table_rows(bench)
    # In runs order, each run's task-level metrics in the order the records give them.
    expected = [
        (run["task"], metric)
        for run in bench["runs"]
        for metric in dict.fromkeys(
            r["metric"]
            for r in bench["records"]
            if (r["task"], r["shots"], r["style"]) == (run["task"], run["shots"], run["style"])
            and r["level"] == "task"
        )
    ]
    assert [(row["task"], row["metric"]) for row in rows] == expected
    by_metric = {(row["task"], row["metric"]): row for row in rows}
    base = _record(bench, task="mmlu", metric="acc", level="task", model="base")
    tuned = _record(bench, task="mmlu", metric="acc", level="task", model="finetuned")
    acc = by_metric["mmlu", "acc"]
    assert acc["shots"] == f"{base['shots']}-shot" and acc["n"] == str(base["n"])
    assert acc["change"] == format_number(tuned["value"] - base["value"], percent=True, signed=True)
    unpaired_se = math.hypot(base["stderr"], tuned["stderr"])
    assert acc["significant"] is (abs(tuned["value"] - base["value"]) > 2 * unpaired_se)
    strict = {(row["task"], row["metric"]): row for row in benchmark_table_rows(bench, 5.0)}
    assert acc["significant"] and not strict["mmlu", "acc"]["significant"]
    assert by_metric["gsm8k", "exact_match,strict-match"]["change"] == "+0.0"
    assert not by_metric["gsm8k", "exact_match,strict-match"]["significant"]


def test_a_benchmark_number_of_one_model_only_is_shown_not_dropped(benchmark_metrics):
    bench = benchmark_metrics
    extra = {
        **_record(bench, task="gsm8k", metric="exact_match,flexible-extract", model="finetuned")
    }
    bench["records"].append({**extra, "metric": "exact_match,custom", "n": None})
    row = next(r for r in benchmark_table_rows(bench) if r["metric"] == "exact_match,custom")
    assert (row["base"], row["change"], row["n"]) == ("—", "—", "—")
    assert row["finetuned"] == format_estimate(extra["value"], extra["stderr"], percent=True)


def test_mmlu_categories_come_from_the_last_mmlu_run(benchmark_metrics):
    bench = benchmark_metrics
    # An earlier 0-shot run with other numbers: the table must show the later 5-shot run's.
    zero_shot = [
        {**r, "shots": 0, "value": r["value"] / 2} for r in bench["records"] if r["task"] == "mmlu"
    ]
    bench["runs"].insert(0, {"task": "mmlu", "shots": 0, "style": "plain"})
    bench["records"] = zero_shot + bench["records"]
    md = _markdown(bench)
    assert "MMLU by category (mmlu, 5-shot, plain), micro average:" in md
    for category in ("stem", "social_sciences"):
        cells = [
            format_number(_record(bench, shots=5, group=category, model=m)["value"], percent=True)
            for m in ("base", "finetuned")
        ]
        assert re.search(rf"\| {category} \| {cells[0]} ± [\d.]+ \| {cells[1]} ± ", md)
    # Both mmlu runs are rows of the main table, the 0-shot one first.
    assert md.index("| mmlu | 0-shot | plain | acc |") < md.index("| mmlu | 5-shot | plain | acc |")


def test_benchmark_sections_in_markdown(benchmark_metrics):
    bench = benchmark_metrics
    md = _markdown(bench, rejected_rows=3)
    lm_eval = [
        format_number(_record(bench, task="arc_easy", model=model)["value"], percent=False)
        for model in ("base", "finetuned")
    ]
    for text in (
        "| task | shots | style | metric | base | fine-tuned | change | n |",
        "| mmlu | 5-shot | plain | acc | 25.0 ± 4.3 | 55.0 ± 5.0 | **+30.0** | 100 |",
        "| category | base | fine-tuned | questions |",
        "| social_sciences | 32.5 ± 7.0 | 62.5 ± 8.0 | 40 |",
        f"| arc_easy | acc,none | {lm_eval[0]} | {lm_eval[1]} |",
        "Benchmark rows rejected at ingest: 3.",
    ):
        assert text in md, text
    assert "Benchmarks" not in _markdown({})


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda b: b.pop("records"), "no 'records'"),
        (lambda b: b["records"][3].pop("stderr"), r"records\[3\]: missing stderr"),
        (lambda b: b["runs"][0].pop("shots"), r"runs\[0\]: missing shots"),
        (lambda b: b["records"][0].update(shots=1), r"records\[0\]: run \('mmlu', 1, 'plain'\)"),
        (lambda b: b["records"][0].update(model="other"), r"records\[0\]: model 'other'"),
        (lambda b: b["records"].append(b["records"][0]), r"records\[\d+\]: repeats the base"),
    ],
)
def test_malformed_benchmark_records_are_named(benchmark_metrics, change, error):
    change(benchmark_metrics)
    with pytest.raises(ValueError, match=error):
        paired_records(benchmark_metrics)
