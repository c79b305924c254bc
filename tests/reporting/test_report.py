"""The whole report: every section in order, markdown and HTML saying the same, and the HTML page
escaped, self-contained and embedding its figures, on small hand-written run artifacts."""

from __future__ import annotations

import html
import re

import pytest

from gemma_pipeline.reporting.plots import plot_loss_curve, png_base64
from gemma_pipeline.reporting.report import ReportInputs, render_html, render_markdown


@pytest.fixture
def inputs(
    heldout_metrics, benchmark_metrics, train_metrics, ingest_summary, run_metadata, run_config
) -> ReportInputs:
    return ReportInputs(
        heldout_metrics=heldout_metrics,
        train_metrics=train_metrics,
        ingest_summary=ingest_summary,
        run_metadata=run_metadata,
        config=run_config,
        benchmark_metrics=benchmark_metrics,
        benchmark_rejected_rows=3,
    )


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    return {"per_subject": "cGVyLXN1YmplY3Q=", "loss_curve": "bG9zcy1jdXJ2ZQ=="}


def test_markdown_and_html_have_every_section_in_the_same_order(inputs, images):
    md_headings = [
        (len(hashes), re.sub(r"\\(.)", r"\1", text))
        for hashes, text in re.findall(r"^(#+) (.*)$", render_markdown(inputs), re.MULTILINE)
    ]
    html_headings = [
        (int(level), html.unescape(text))
        for level, text in re.findall(r"<h(\d)>(.*?)</h\1>", render_html(inputs, images))
    ]
    assert md_headings == html_headings
    sections = [text for level, text in md_headings if level <= 2]
    assert sections == [
        inputs.title,
        "Results",
        "Reading the results",
        "Predicted-letter shares",
        "Per subject",
        "Benchmarks in lm-evaluation-harness's format",
        "Training",
        "Data: accepted and rejected rows",
        "Configuration",
        "Versions",
    ]


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
