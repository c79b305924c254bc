"""The report's tables, sentences and renderings, on small hand-written run artifacts."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from gemma_pipeline.reporting.formatting import format_estimate, format_number
from gemma_pipeline.reporting.plots import plot_loss_curve, png_base64
from gemma_pipeline.reporting.report import (
    ReportInputs,
    benchmark_table_rows,
    letter_spread_rows,
    paired_records,
    per_subject_rows,
    render_html,
    render_markdown,
    results_table_rows,
    task_summary,
)

DATA = Path(__file__).parent / "data"


def _load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def metrics() -> dict:
    return _load("heldout_metrics")


@pytest.fixture
def bench() -> dict:
    return _load("benchmark_metrics")


@pytest.fixture(scope="module")
def inputs(metrics) -> ReportInputs:
    return ReportInputs(
        heldout_metrics=metrics,
        train_metrics=_load("train_metrics"),
        ingest_summary=_load("ingest_summary"),
        run_metadata={
            "session_id": "2026-01-02T03.04.05.678Z",
            "save_version": "2026-01-02T03.04.05.678Z",
            "env": "demo",
            "load_versions": {"adapter": "2025-12-31T00.00.00.000Z"},
            "dataset_versions": {
                "adapter": "2025-12-31T00.00.00.000Z",
                "heldout_metrics": None,
                "questions": "2025-12-30T00.00.00.000Z",
            },
            "written_this_run": ["heldout_metrics"],
            "git": {"commit": "0123abcd", "dirty": True},
            "python": "3.11.7",
            "packages": {"torch": "2.6.0", "bitsandbytes": None},
        },
        config={"model": {"name_or_path": "google/gemma-2-2b-it"}, "evaluate": {"split": "test"}},
        benchmark_metrics=_load("benchmark_metrics"),
        benchmark_rejected_rows=3,
    )


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    return {"per_subject": "cGVyLXN1YmplY3Q=", "loss_curve": "bG9zcy1jdXJ2ZQ=="}


def test_results_table_rows_format_and_mark_each_metric(metrics):
    rows = {(row["dataset"], row["metric"]): row for row in results_table_rows(metrics)}
    # Unknown top-level keys (lm_eval) are not tasks.
    assert {dataset for dataset, _ in rows} == {"mmlu", "mathqa"}
    acc = rows["mmlu", "letter_acc"]
    assert (acc["base"], acc["finetuned"], acc["change"]) == (
        "25.0 ± 4.4",
        "50.0 ± 5.0",
        "+25.0 ± 6.0",
    )
    assert acc["significant"]
    assert not rows["mmlu", "option_acc"]["significant"]
    assert rows["mmlu", "option_acc_norm"]["finetuned"] == "—"
    assert rows["mmlu", "option_acc_norm"]["change"] == "—"
    assert rows["mmlu", "completion_perplexity"]["base"] == "12.3 ± 0.5"
    # One question: no SE, so a +100-point change is still not marked.
    assert rows["mathqa", "letter_acc"]["change"] == "+100.0"
    assert not rows["mathqa", "letter_acc"]["significant"]
    strict = {(row["dataset"], row["metric"]): row for row in results_table_rows(metrics, 5.0)}
    assert strict["mmlu", "letter_acc"]["significant"] is False


def test_letter_spread_and_per_subject_rows(metrics):
    letters, spread = letter_spread_rows(metrics)
    assert letters == ["A", "B", "C", "D", "E"]
    base_mmlu = next(r for r in spread if r["dataset"] == "mmlu" and r["model"] == "base")
    assert base_mmlu["shares"]["A"] == "90.0" and base_mmlu["max_share"] == "90.0"
    subjects = per_subject_rows(metrics)
    geography = next(r for r in subjects if r["subject"] == "geography")
    assert geography["change"] == "+35.0 ± 8.0" and geography["significant"]


def test_task_summary_weighs_the_gain_and_the_letter_spread(metrics):
    text = task_summary("mmlu", metrics["tasks"]["mmlu"])
    assert "25.0% → 50.0%" in text
    assert "+25.0 points" in text and "larger than 2 SE (12.0 points)" in text
    assert "base model 90.0% on A" in text and "fine-tuned model 40.0% on B" in text
    # The base model's collapse onto A is called out; the fine-tuned one is not collapsed.
    assert "The base model puts at least 50.0%" in text
    quiet = task_summary("mmlu", metrics["tasks"]["mmlu"], significance_se=5.0, collapse_share=0.95)
    assert "within 5 SE" in quiet and "at least" not in quiet
    assert "no standard error" in task_summary("mathqa", metrics["tasks"]["mathqa"])


def test_markdown_has_every_section(inputs):
    md = render_markdown(inputs)
    assert "| dataset | metric | base | fine-tuned | change ± SE |" in md
    assert "| mmlu | `letter_acc` | 25.0 ± 4.4 | 50.0 ± 5.0 | **+25.0 ± 6.0** |" in md
    # A pipe in a subject name must not split the table row.
    assert "\\<script\\>alert(1)\\</script\\> \\| law" in md
    for text in (
        "## Reading the results",
        "## Predicted-letter shares",
        "catalog dataset `per_subject_plot`",
        "catalog dataset `loss_curve`",
        "| mmlu | train | 100 | 98 | 2 |",
        "| options | 1 |",
        "name_or_path: google/gemma-2-2b-it",
        "`0123abcd (with uncommitted changes)`",
        "| adapter | 2025-12-31T00.00.00.000Z | pinned (--load-versions) |",
        "| heldout_metrics | 2026-01-02T03.04.05.678Z | written by this run |",
        "| bitsandbytes | not installed |",
        "| trainable parameters | 10,383,360 |",
    ):
        assert text in md, text


def test_html_is_escaped_self_contained_and_embeds_the_figures(inputs, images):
    page = render_html(inputs, images)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; | law" in page
    assert '<td class="r"><strong>+25.0 ± 6.0</strong></td>' in page
    assert 'src="data:image/png;base64,cGVyLXN1YmplY3Q="' in page
    assert 'src="data:image/png;base64,bG9zcy1jdXJ2ZQ=="' in page
    assert "http" not in page  # nothing fetched from elsewhere
    missing = render_html(inputs, {})
    assert "figure not available" in missing


def test_html_embeds_the_plotted_loss_curve(inputs):
    loss = png_base64(plot_loss_curve(inputs.train_metrics["log_history"]), close=True)
    page = render_html(inputs, {"loss_curve": loss})
    assert re.search(r'src="data:image/png;base64,iVBORw0KGgo[A-Za-z0-9+/=]+"', page)


def _record(bench: dict, **match) -> dict:
    (record,) = [r for r in bench["records"] if all(r[k] == v for k, v in match.items())]
    return record


def test_benchmark_rows_follow_runs_and_compare_the_models(bench):
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


def test_a_benchmark_number_of_one_model_only_is_shown_not_dropped(bench):
    extra = {
        **_record(bench, task="gsm8k", metric="exact_match,flexible-extract", model="finetuned")
    }
    bench["records"].append({**extra, "metric": "exact_match,custom", "n": None})
    row = next(r for r in benchmark_table_rows(bench) if r["metric"] == "exact_match,custom")
    assert (row["base"], row["change"], row["n"]) == ("—", "—", "—")
    assert row["finetuned"] == format_estimate(extra["value"], extra["stderr"], percent=True)


def test_mmlu_categories_come_from_the_last_mmlu_run(bench, inputs):
    # An earlier 0-shot run with other numbers: the table must show the later 5-shot run's.
    zero_shot = [
        {**r, "shots": 0, "value": r["value"] / 2} for r in bench["records"] if r["task"] == "mmlu"
    ]
    bench["runs"].insert(0, {"task": "mmlu", "shots": 0, "style": "plain"})
    bench["records"] = zero_shot + bench["records"]
    md = render_markdown(
        ReportInputs(heldout_metrics=inputs.heldout_metrics, benchmark_metrics=bench)
    )
    assert "MMLU by category (mmlu, 5-shot, plain), micro average:" in md
    for category in ("stem", "social_sciences"):
        cells = [
            format_number(_record(bench, shots=5, group=category, model=m)["value"], percent=True)
            for m in ("base", "finetuned")
        ]
        assert re.search(rf"\| {category} \| {cells[0]} ± [\d.]+ \| {cells[1]} ± ", md)
    # Both mmlu runs are rows of the main table, the 0-shot one first.
    assert md.index("| mmlu | 0-shot | plain | acc |") < md.index("| mmlu | 5-shot | plain | acc |")


def test_benchmark_sections_in_markdown(inputs, bench):
    md = render_markdown(inputs)
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
    assert "Benchmarks" not in render_markdown(ReportInputs(heldout_metrics=inputs.heldout_metrics))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda b: b.pop("records"), "no 'records'"),
        (lambda b: b["records"][3].pop("stderr"), r"records\[3\]: missing stderr"),
        (lambda b: b["runs"][0].pop("shots"), r"runs\[0\]: missing shots"),
        (lambda b: b["records"][0].update(shots=1), r"records\[0\]: run \('mmlu', 1, 'plain'\)"),
        (lambda b: b["records"][0].update(model="other"), r"records\[0\]: model 'other'"),
        (lambda b: b["records"].append(b["records"][0]), r"records\[14\]: repeats the base"),
    ],
)
def test_malformed_benchmark_records_are_named(bench, change, error):
    change(bench)
    with pytest.raises(ValueError, match=error):
        paired_records(bench)
