"""The run report: its inputs, and its sections in order, rendered to markdown and to a
self-contained HTML page.

Each group of sections lives in its own module: ``heldout`` (results on the held-out split),
``benchmarks`` (lm-evaluation-harness format), ``export`` (the exported files and their
checks) and ``run`` (training, data, configuration,
versions). This module only puts them in order and renders them (``reporting.blocks``), so the
markdown file and the HTML page always say the same thing.

Inputs are the run's JSON artifacts as loaded by the catalog (``heldout_metrics``,
``benchmark_metrics``, ``train_metrics``, ``ingest_summary``) and the ``run_metadata`` the
RunMetadataHook collects. Configuration is shown as given: the caller redacts it
(``gemma_pipeline.redaction.redact``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gemma_pipeline.reporting.benchmarks import benchmark_blocks
from gemma_pipeline.reporting.blocks import (
    Block,
    Heading,
    render_html_page,
    render_markdown_blocks,
)
from gemma_pipeline.reporting.export import export_blocks
from gemma_pipeline.reporting.heldout import heldout_blocks
from gemma_pipeline.reporting.run import run_blocks


@dataclass(frozen=True)
class ReportInputs:
    """Everything one report shows. ``config`` is shown as given: redact it first."""

    heldout_metrics: Mapping[str, Any]
    train_metrics: Mapping[str, Any] = field(default_factory=dict)
    ingest_summary: Mapping[str, Any] = field(default_factory=dict)
    run_metadata: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    benchmark_metrics: Mapping[str, Any] = field(default_factory=dict)
    benchmark_rejected_rows: int = 0
    export_checks: Mapping[str, Any] = field(default_factory=dict)
    title: str = "Gemma QLoRA fine-tune: base vs fine-tuned"
    significance_se: float = 2.0
    collapse_share: float = 0.5


def report_blocks(inputs: ReportInputs) -> list[Block]:
    """The whole report, in order, as renderer-neutral blocks."""
    return [
        Heading(inputs.title, level=1),
        *heldout_blocks(
            inputs.heldout_metrics,
            significance_se=inputs.significance_se,
            collapse_share=inputs.collapse_share,
        ),
        *benchmark_blocks(
            inputs.benchmark_metrics,
            significance_se=inputs.significance_se,
            rejected_rows=inputs.benchmark_rejected_rows,
        ),
        *export_blocks(inputs.export_checks),
        *run_blocks(
            train_metrics=inputs.train_metrics,
            ingest_summary=inputs.ingest_summary,
            config=inputs.config,
            run_metadata=inputs.run_metadata,
        ),
    ]


def render_markdown(inputs: ReportInputs) -> str:
    """The report as markdown (figures referenced by their catalog dataset, not embedded)."""
    return render_markdown_blocks(report_blocks(inputs))


def render_html(inputs: ReportInputs, images: Mapping[str, str]) -> str:
    """The report as one self-contained HTML page.

    ``images`` maps a figure key (``per_subject``, ``loss_curve``) to its base64 PNG
    (``plots.png_base64``); the page needs nothing else to display.
    """
    return render_html_page(report_blocks(inputs), inputs.title, images)
