"""Normalizer for GSM8K-style sources (openai/gsm8k ``main``): a question and a worked answer.

GSM8K is scored by generation, not by choices: a row keeps ``choices`` empty, ``answer`` -1,
and the whole worked answer (ending in ``#### <number>``) in ``rationale``, which is what
lm-evaluation-harness uses both as the few-shot target and as the reference.
"""

from __future__ import annotations

import re

import pandas as pd

from gemma_pipeline.sources._common import (
    Layout,
    Row,
    RowDetails,
    RowProblem,
    detect_layout,
    normalize_rows,
    require_text,
)

TASK = "gsm8k"

#: The reference answer's final line, as lm-eval's strict-match filter reads it.
FINAL_ANSWER = re.compile(r"#### (\-?[0-9\.\,]+)")


def normalize_gsm8k(
    raw: pd.DataFrame,
    *,
    source: str,
    split: str,
    origin: str,
    keep_duplicates: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn a raw GSM8K frame into (accepted questions, rejected rows)."""
    layout = detect_layout(raw, LAYOUTS, task=TASK, origin=origin)
    return normalize_rows(
        raw, layout, source=source, task=TASK, split=split, keep_duplicates=keep_duplicates
    )


# Text is checked (present, non-empty) but kept unstripped: lm-eval's prompt uses it verbatim.
def _text(row: Row) -> tuple[str, list[str]]:
    require_text(row.get("question"), "question")
    return row["question"], []


def _details(row: Row, n_choices: int) -> RowDetails:
    require_text(row.get("answer"), "answer")
    answer = row["answer"]
    if not FINAL_ANSWER.search(answer):
        raise RowProblem("answer: no final '#### <number>' line to score against")
    return RowDetails(subject="", answer=-1, rationale=answer, raw_options=None)


LAYOUTS: list[Layout] = [
    Layout(
        name="openai/gsm8k main (question, answer)",
        required=("question", "answer"),
        optional=(),
        read_text=_text,
        read_details=_details,
    ),
]
