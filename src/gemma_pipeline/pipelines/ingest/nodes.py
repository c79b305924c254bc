"""Nodes of the ingest pipeline: load every configured source, normalize, quarantine bad rows."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from gemma_pipeline.config import IngestParams, SourceParams, parse_params
from gemma_pipeline.sources import (
    generate_gsm8k_raw,
    generate_mathqa_raw,
    generate_mmlu_raw,
    load_hub,
    load_local,
    normalize,
)
from gemma_pipeline.sources.schema import (
    QUESTION_COLUMNS,
    REJECT_COLUMNS,
    empty_questions,
    empty_rejects,
)

logger = logging.getLogger(__name__)

_GENERATORS = {
    "mmlu": generate_mmlu_raw,
    "mathqa": generate_mathqa_raw,
    "gsm8k": generate_gsm8k_raw,
}
# The generator split that stands in for a benchmark's few-shot pool (cais/mmlu "dev",
# gsm8k "train"): disjoint from the generated test rows by construction.
_SAMPLE_SPLIT = {"fewshot": "validation"}
# Held-out splits win: a train row whose content also sits in validation/test is quarantined, so
# evaluation never scores a question the model was trained on.
_HELD_OUT = ("test", "validation")


def _load_raw_split(source: SourceParams, split: str, seed: int) -> tuple[pd.DataFrame, str]:
    """Return one split of one source in its raw (hub) schema, and where it came from."""
    if source.loader == "hub":
        spec = source.hub.splits[split]
        origin = f"hub:{source.hub.path}/{spec.name or 'default'}[{spec.split}]"
        raw = load_hub(source.hub.path, spec.name, spec.split, revision=source.hub.revision)
    elif source.loader == "local":
        origin = source.local[split]
        raw = load_local(origin)
    else:
        origin = f"sample:{source.task}[{split}] seed={seed}"
        raw = _GENERATORS[source.task](_SAMPLE_SPLIT.get(split, split), source.sample[split], seed)
    if source.max_rows is not None:
        raw = raw.head(source.max_rows)
    return raw.reset_index(drop=True), origin


def _splits_of(source: SourceParams) -> list[str]:
    section = getattr(source, source.loader)
    return list(section.splits if source.loader == "hub" else section)


def quarantine_leaked_rows(
    questions: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move rows whose content also appears in a more held-out split of the same source.

    Priority is test > validation > train: a question in both validation and test stays in test.
    """
    priority = questions["split"].map({split: rank for rank, split in enumerate(_HELD_OUT)})
    priority = priority.fillna(len(_HELD_OUT))
    owner = (
        questions.assign(_priority=priority)
        .sort_values("_priority", kind="stable")
        .groupby("row_id")["split"]
        .first()
    )
    owner_split = questions["row_id"].map(owner)
    leaked_mask = questions["split"] != owner_split
    leaked = questions[leaked_mask]
    rejected = pd.DataFrame(
        {
            "source": leaked["source"].astype(str),
            "split": leaked["split"].astype(str),
            "row_id": leaked["row_id"].astype(str),
            "reason": "question: same content as "
            + leaked["row_id"].astype(str)
            + " in the "
            + owner_split[leaked_mask].astype(str)
            + " split",
            "raw": [
                row.to_json() for _, row in leaked[["question", "choices", "answer"]].iterrows()
            ],
        },
        columns=REJECT_COLUMNS,
    )
    return questions[~leaked_mask].reset_index(drop=True), rejected


def _read_and_normalize(
    sources: dict[str, SourceParams], seed: int, keep_duplicates: bool = False
) -> tuple[pd.DataFrame, list[pd.DataFrame], dict[str, dict[str, dict[str, int]]]]:
    """Accepted rows, the rejected parts and per-source/split counts of every source."""
    # Read every source first: a missing file or an unreachable hub in the last one fails fast.
    raw_splits = []
    for name, source in sources.items():
        for split in _splits_of(source):
            raw, origin = _load_raw_split(source, split, seed)
            raw_splits.append((name, source.task, split, raw, origin))

    accepted_parts, rejected_parts = [], []
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for name, task, split, raw, origin in raw_splits:
        accepted, rejected = normalize(
            task, raw, source=name, split=split, origin=origin, keep_duplicates=keep_duplicates
        )
        if len(accepted) + len(rejected) != len(raw):  # the promise every count relies on
            raise RuntimeError(
                f"{origin}: {len(raw)} rows read, but only "
                f"{len(accepted) + len(rejected)} accepted or rejected"
            )
        accepted_parts.append(accepted)
        rejected_parts.append(rejected)
        counts.setdefault(name, {})[split] = {
            "read": len(raw),
            "accepted": len(accepted),
            "rejected": len(rejected),
        }
    questions = pd.concat(accepted_parts, ignore_index=True)[QUESTION_COLUMNS]
    return questions, rejected_parts, counts


def _log_counts(label: str, counts: dict[str, dict[str, dict[str, int]]]) -> None:
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
    """Load the evaluation benchmarks (test rows and few-shot pools) into the question schema.

    Row order is the source's: lm-eval's few-shot samplers depend on it (MMLU takes the first
    five dev rows of a subject; GSM8K draws from the train pool with a seeded RNG).
    """
    params = parse_params(IngestParams, ingest_params, "ingest")
    if not params.benchmarks:
        logger.info("ingest.benchmarks is empty: no benchmark rows")
        return empty_questions(), empty_rejects()
    questions, rejected_parts, counts = _read_and_normalize(
        params.benchmarks, params.sample_seed, keep_duplicates=True
    )
    _log_counts("benchmark", counts)
    rejected = pd.concat(rejected_parts, ignore_index=True)[REJECT_COLUMNS].astype(str)
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
    questions, rejected_parts, counts = _read_and_normalize(params.sources, params.sample_seed)
    questions, leaked = quarantine_leaked_rows(questions)
    for _, row in leaked.iterrows():
        counts[row["source"]][row["split"]]["accepted"] -= 1
        counts[row["source"]][row["split"]]["rejected"] += 1
    rejected_rows = pd.concat([*rejected_parts, leaked], ignore_index=True)[REJECT_COLUMNS]
    rejected_rows = rejected_rows.astype(str)

    _log_counts("ingest", counts)
    summary = {
        "counts": counts,
        "rejected_by_reason": _reason_counts(rejected_rows),
    }
    return questions, rejected_rows, summary


def _reason_counts(rejected_rows: pd.DataFrame) -> dict[str, int]:
    """Group reasons by the field they name (the text before the first colon)."""
    if rejected_rows.empty:
        return {}
    kinds = rejected_rows["reason"].str.split(":", n=1).str[0]
    return {str(kind): int(count) for kind, count in kinds.value_counts().items()}
