"""Nodes of the ingest pipeline: load every configured source, normalize, quarantine bad rows."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from gemma_pipeline.config import IngestParams, parse_params
from gemma_pipeline.sources.ingest import (
    Counts,
    read_benchmarks,
    read_training_sources,
    reason_counts,
)

logger = logging.getLogger(__name__)


def _log_counts(label: str, counts: Counts) -> None:
    for name, splits in counts.items():
        for split, count in splits.items():
            logger.info(
                "%s %s/%s: %d read, %d accepted, %d rejected",
                label,
                name,
                split,
                count["read"],
                count["accepted"],
                count["rejected"],
            )


def ingest_benchmarks(ingest_params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evaluation benchmarks (test rows and few-shot pools), in source order, and the
    rejected rows."""
    params = parse_params(IngestParams, ingest_params, "ingest")
    if not params.benchmarks:
        logger.info("ingest.benchmarks is empty: no benchmark rows")
    questions, rejected, counts = read_benchmarks(params)
    _log_counts("benchmark", counts)
    return questions, rejected


def ingest_sources(
    ingest_params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Load, normalize and validate every configured source.

    Returns the accepted questions (``schema.QUESTION_COLUMNS``), the rejected rows with their
    reasons (``schema.REJECT_COLUMNS``) and per-source/split counts. For every source and split,
    accepted + rejected = rows read.
    """
    params = parse_params(IngestParams, ingest_params, "ingest")
    questions, rejected_rows, counts = read_training_sources(params)
    _log_counts("ingest", counts)
    summary = {"counts": counts, "rejected_by_reason": reason_counts(rejected_rows)}
    return questions, rejected_rows, summary
