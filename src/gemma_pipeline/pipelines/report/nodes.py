"""Nodes of the report pipeline: the run's JSON artifacts → markdown, HTML and a plot."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from gemma_pipeline.config import ReportParams, parse_params
from gemma_pipeline.redaction import redact
from gemma_pipeline.reporting.plots import plot_loss_curve, plot_per_subject, png_base64
from gemma_pipeline.reporting.report import ReportInputs, render_html, render_markdown


def build_report(
    heldout_metrics: dict[str, Any],
    benchmark_metrics: dict[str, Any],
    benchmark_rejected_rows: pd.DataFrame,
    export_checks: dict[str, Any],
    train_metrics: dict[str, Any],
    ingest_summary: dict[str, Any],
    run_metadata: dict[str, Any],
    report_params: dict[str, Any],
    model_params: dict[str, Any],
    train_params: dict[str, Any],
    evaluate_params: dict[str, Any],
) -> tuple[str, str, Figure]:
    """Render the run's report as markdown and self-contained HTML, with the per-subject plot.

    The loss curve is re-plotted from ``train_metrics``' log history rather than read from the
    ``loss_curve`` PNG, so a report-only run needs nothing but JSON. Parameters are redacted
    before they are shown: a report is the artifact most likely to be shared.
    """
    params = parse_params(ReportParams, report_params, "report")
    inputs = ReportInputs(
        heldout_metrics=heldout_metrics,
        train_metrics=train_metrics,
        ingest_summary=ingest_summary,
        run_metadata=run_metadata,
        config=redact(
            {"model": model_params, "train_qlora": train_params, "evaluate": evaluate_params}
        ),
        benchmark_metrics=benchmark_metrics,
        benchmark_rejected_rows=len(benchmark_rejected_rows),
        export_checks=export_checks,
        title=params.title,
        significance_se=params.significance_se,
        collapse_share=params.collapse_share,
    )
    per_subject = plot_per_subject(heldout_metrics)
    images = {
        "per_subject": png_base64(per_subject),
        "loss_curve": png_base64(
            plot_loss_curve(train_metrics.get("log_history") or []), close=True
        ),
    }
    return render_markdown(inputs), render_html(inputs, images), per_subject
