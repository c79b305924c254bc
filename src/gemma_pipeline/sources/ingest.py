"""Reading every configured source and normalizing it into the question schema.

The library side of the ingest pipeline (its nodes only validate parameters and log), so that
other code reading sources the same way, such as the fidelity comparison with lm-eval, does not
reach into the pipelines. For every source and split, accepted + rejected = rows read.
"""

from __future__ import annotations

import pandas as pd

from gemma_pipeline.config import IngestParams, SourceParams
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

#: Rows read, accepted and rejected, per source and split.
Counts = dict[str, dict[str, dict[str, int]]]

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


def read_and_normalize(
    sources: dict[str, SourceParams], seed: int, keep_duplicates: bool = False
) -> tuple[pd.DataFrame, list[pd.DataFrame], Counts]:
    """Accepted rows, the rejected parts and per-source/split counts of every source."""
    # Read every source first: a missing file or an unreachable hub in the last one fails fast.
    raw_splits = []
    for name, source in sources.items():
        for split in _splits_of(source):
            raw, origin = _load_raw_split(source, split, seed)
            raw_splits.append((name, source.task, split, raw, origin))

    accepted_parts, rejected_parts = [], []
    counts: Counts = {}
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


def read_benchmarks(params: IngestParams) -> tuple[pd.DataFrame, pd.DataFrame, Counts]:
    """The evaluation benchmarks (test rows and few-shot pools) in the question schema, the
    rejected rows, and the counts.

    Row order is the source's: lm-eval's few-shot samplers depend on it (MMLU takes the first
    five dev rows of a subject; GSM8K draws from the train pool with a seeded RNG). Duplicates
    are kept, as lm-eval keeps them.
    """
    if not params.benchmarks:
        return empty_questions(), empty_rejects(), {}
    questions, rejected_parts, counts = read_and_normalize(
        params.benchmarks, params.sample_seed, keep_duplicates=True
    )
    rejected = pd.concat(rejected_parts, ignore_index=True)[REJECT_COLUMNS].astype(str)
    return questions, rejected, counts


def read_training_sources(
    params: IngestParams,
) -> tuple[pd.DataFrame, pd.DataFrame, Counts]:
    """The training/held-out questions, the rejected rows (a held-out question repeated in
    training is rejected from training), and the counts."""
    questions, rejected_parts, counts = read_and_normalize(params.sources, params.sample_seed)
    questions, leaked = quarantine_leaked_rows(questions)
    for _, row in leaked.iterrows():
        counts[row["source"]][row["split"]]["accepted"] -= 1
        counts[row["source"]][row["split"]]["rejected"] += 1
    rejected = pd.concat([*rejected_parts, leaked], ignore_index=True)[REJECT_COLUMNS]
    return questions, rejected.astype(str), counts


def reason_counts(rejected_rows: pd.DataFrame) -> dict[str, int]:
    """Group reasons by the field they name (the text before the first colon)."""
    if rejected_rows.empty:
        return {}
    kinds = rejected_rows["reason"].str.split(":", n=1).str[0]
    return {str(kind): int(count) for kind, count in kinds.value_counts().items()}
