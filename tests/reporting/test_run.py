"""The sections on the run itself: training, ingest's accepted and rejected rows, the
configuration and the versions of code, data and packages."""

from __future__ import annotations

from gemma_pipeline.reporting.blocks import render_markdown_blocks
from gemma_pipeline.reporting.run import run_blocks


def test_run_sections_in_markdown(train_metrics, ingest_summary, run_metadata, run_config):
    md = render_markdown_blocks(
        run_blocks(
            train_metrics=train_metrics,
            ingest_summary=ingest_summary,
            config=run_config,
            run_metadata=run_metadata,
        )
    )
    for text in (
        "catalog dataset `loss_curve`",
        "| mmlu | train | 100 | 98 | 2 |",
        "| options | 1 |",
        "name_or_path: google/gemma-2-2b-it",
        "`0123abcd (with uncommitted changes)`",
        "| adapter | 2025-12-31T00.00.00.000Z | pinned (--load-versions) |",
        "| heldout_metrics | 2026-01-02T03.04.05.678Z | written by this run |",
        "| bitsandbytes | not installed |",
        "| trainable parameters | 10,383,360 |",
        "| batch per optimizer step | 32 examples: 2 processes × 1 micro-batch of ≤ 16 rows |",
    ):
        assert text in md, text
