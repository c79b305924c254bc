"""The report's tables, sentences and renderings, on a small hand-written metrics.json."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from gemma_pipeline.reporting.plots import plot_loss_curve, png_base64
from gemma_pipeline.reporting.report import (
    ReportInputs,
    format_estimate,
    is_significant,
    letter_spread_rows,
    per_subject_rows,
    plot_per_subject,
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
    return _load("metrics")


@pytest.fixture(scope="module")
def inputs(metrics) -> ReportInputs:
    return ReportInputs(
        metrics=metrics,
        train_metrics=_load("train_metrics"),
        ingest_summary=_load("ingest_summary"),
        run_metadata={
            "session_id": "2026-01-02T03.04.05.678Z",
            "save_version": "2026-01-02T03.04.05.678Z",
            "env": "demo",
            "load_versions": {"adapter": "2025-12-31T00.00.00.000Z"},
            "dataset_versions": {
                "adapter": "2025-12-31T00.00.00.000Z",
                "metrics": None,
                "questions": "2025-12-30T00.00.00.000Z",
            },
            "written_this_run": ["metrics"],
            "git": {"commit": "0123abcd", "dirty": True},
            "python": "3.11.7",
            "packages": {"torch": "2.6.0", "bitsandbytes": None},
        },
        config={"model": {"name_or_path": "google/gemma-2-2b-it"}, "evaluate": {"split": "test"}},
    )


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    return {"per_subject": "cGVyLXN1YmplY3Q=", "loss_curve": "bG9zcy1jdXJ2ZQ=="}


@pytest.mark.parametrize(
    ("value", "se", "percent", "signed", "expected"),
    [
        (0.25, 0.04352, True, False, "25.0 ± 4.4"),
        (0.25, 0.06, True, True, "+25.0 ± 6.0"),
        (-0.021, 0.01, True, True, "-2.1 ± 1.0"),
        (0.5, None, True, False, "50.0"),
        (None, 0.01, True, False, "—"),
        (12.345, 0.5123, False, False, "12.3 ± 0.5"),
        (1234.5, 20.0, False, True, "+1230 ± 20"),
        (0.0123, None, False, False, "0.0123"),
    ],
)
def test_format_estimate(value, se, percent, signed, expected):
    assert format_estimate(value, se, percent=percent, signed=signed) == expected


@pytest.mark.parametrize(
    ("change", "se", "expected"),
    [
        (0.25, 0.06, True),
        (-0.25, 0.06, True),
        (0.12, 0.06, False),
        (0.1, None, False),
        (None, 0.1, False),
        (0.0, 0.0, False),
    ],
)
def test_a_change_is_marked_only_beyond_two_standard_errors(change, se, expected):
    assert is_significant(change, se, 2.0) is expected


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
    assert results_table_rows(metrics, significance_se=5.0)[1]["significant"] is False


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
        "| metrics | 2026-01-02T03.04.05.678Z | written by this run |",
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


def test_plots_render_to_png(metrics, inputs):
    figure = plot_per_subject(metrics)
    assert len(figure.axes) == 2  # one panel per task
    assert figure.axes[1].get_yticklabels()[0].get_text() == "geography (n=60)"
    encoded = png_base64(figure, close=True)
    assert base64.b64decode(encoded).startswith(b"\x89PNG")
    empty = plot_per_subject({"tasks": {}})
    assert empty.axes[0].texts
    plt.close(empty)
    loss = png_base64(plot_loss_curve(inputs.train_metrics["log_history"]), close=True)
    page = render_html(inputs, {"loss_curve": loss})
    assert re.search(r'src="data:image/png;base64,iVBORw0KGgo[A-Za-z0-9+/=]+"', page)
