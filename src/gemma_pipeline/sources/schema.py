"""The one normalized question schema that every source is turned into.

Both tasks (MMLU-style and Math-QA-style multiple choice) share it, so every later stage
(prompt formatting, tokenization, evaluation) reads a single layout.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

#: Columns of the normalized ``questions`` dataset, in order.
QUESTION_COLUMNS: list[str] = [
    "row_id",  # stable id: same content from the same source gives the same id
    "source",  # source name from parameters_ingest.yml (e.g. "mmlu", "mathqa")
    "task",  # "mmlu" | "mathqa"
    "split",  # "train" | "validation" | "test"
    "subject",  # MMLU subject or Math-QA category; "" when the source has none
    "question",
    "choices",  # list[str]: option texts without their letters
    "answer",  # int: index into choices
    "rationale",  # str | None: worked solution where the source has one
    # str | None: the source's options exactly as written, where it wrote them as one text
    # (Math-QA); None otherwise. lm-eval's mathqa task parses its choices from this text.
    "raw_options",
]

#: Columns of the ``rejected_rows`` dataset.
REJECT_COLUMNS: list[str] = ["source", "split", "row_id", "reason", "raw"]

LETTERS = "ABCDEFGHIJ"


def make_row_id(source: str, question: str, choices: list[str]) -> str:
    """Content hash that survives reordering and re-downloads of the source."""
    payload = json.dumps([source, question, list(choices)], ensure_ascii=False)
    return f"{source}-{hashlib.sha1(payload.encode('utf-8')).hexdigest()[:16]}"


def empty_questions() -> pd.DataFrame:
    return pd.DataFrame({column: [] for column in QUESTION_COLUMNS})


def empty_rejects() -> pd.DataFrame:
    return pd.DataFrame({column: [] for column in REJECT_COLUMNS}).astype(str)
