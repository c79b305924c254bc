"""Normalizer for MMLU-style sources: cais/mmlu in its two raw layouts, from the Hub or files."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gemma_pipeline.sources._common import (
    Layout,
    Row,
    RowDetails,
    RowProblem,
    detect_layout,
    is_missing,
    normalize_rows,
    option_text,
    optional_text,
    parse_literal,
    require_text,
    short,
    type_name,
)
from gemma_pipeline.sources.schema import LETTERS

TASK = "mmlu"

_STRUCT_FIELDS = "question, subject, choices, answer"


def normalize_mmlu(
    raw: pd.DataFrame,
    *,
    source: str,
    split: str,
    origin: str,
    keep_duplicates: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn a raw MMLU frame into (accepted questions, rejected rows).

    ``origin`` (a file path or hub id) only serves error messages. Raises
    :class:`~gemma_pipeline.sources.errors.SourceLayoutError` when the columns match no known
    layout; problems within a row never raise, they put the row in the rejected frame.
    """
    layout = detect_layout(raw, LAYOUTS, task=TASK, origin=origin)
    return normalize_rows(
        raw, layout, source=source, task=TASK, split=split, keep_duplicates=keep_duplicates
    )


def parse_choices(value: Any) -> list[str]:
    """Option texts from a list, tuple, numpy array or the text of a list (CSV)."""
    if is_missing(value):
        raise RowProblem("choices: missing")
    if isinstance(value, str):
        try:
            value = parse_literal(value)
        except ValueError as exc:
            raise RowProblem(f"choices: {exc}") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise RowProblem(f"choices: expected a list of options, found {type_name(value)}")
    if not 2 <= len(value) <= len(LETTERS):
        raise RowProblem(f"choices: expected 2 to {len(LETTERS)} options, found {len(value)}")
    try:
        return [option_text(item, LETTERS[index]) for index, item in enumerate(value)]
    except ValueError as exc:
        raise RowProblem(f"choices: {exc}") from None


def parse_answer(value: Any, n_choices: int) -> int:
    """Index of the correct choice from an int, a numeric string or a letter (any case)."""
    if is_missing(value):
        raise RowProblem("answer: missing")
    letters = LETTERS[:n_choices]
    expected = f"an index 0..{n_choices - 1} or a letter {letters[0]}-{letters[-1]}"
    index: int | None = None
    if isinstance(value, bool):
        index = None  # True == 1 in Python, but a flag is never a meaningful answer
    elif isinstance(value, int | np.integer):
        index = int(value)
    elif isinstance(value, float | np.floating):
        # Integer columns with gaps come back as floats (2.0) from CSV and pandas.
        index = int(value) if float(value).is_integer() else None
    elif isinstance(value, str):
        index = _answer_from_text(value.strip())
    if index is None:
        raise RowProblem(f"answer: {short(value)} is not {expected}")
    if not 0 <= index < n_choices:
        raise RowProblem(f"answer: {short(value)} out of range for {n_choices} choices")
    return index


def _answer_from_text(text: str) -> int | None:
    if len(text) == 1 and text.upper() in LETTERS:
        return LETTERS.index(text.upper())
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _flat_text(row: Row) -> tuple[str, list[str]]:
    return require_text(row.get("question"), "question"), parse_choices(row.get("choices"))


def _flat_details(row: Row, n_choices: int) -> RowDetails:
    return RowDetails(
        subject=optional_text(row.get("subject"), "subject"),
        answer=parse_answer(row.get("answer"), n_choices),
        rationale=None,
        raw_options=None,
    )


def _struct(row: Row) -> Mapping[str, Any]:
    """The ``train`` struct of auxiliary_train; CSV and some JSON exports hold it as text."""
    value = row.get("train")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # unparsable text is reported just below
            value = parse_literal(value)
    if not isinstance(value, Mapping):
        raise RowProblem(
            f"train: expected a struct with fields {_STRUCT_FIELDS}, "
            f"found {type_name(value)} {short(value)}"
        )
    return value


def _nested_text(row: Row) -> tuple[str, list[str]]:
    return _flat_text(_struct(row))


def _nested_details(row: Row, n_choices: int) -> RowDetails:
    return _flat_details(_struct(row), n_choices)


#: Tried in order; the flat layout wins when a frame somehow carries both.
LAYOUTS: list[Layout] = [
    Layout(
        name="cais/mmlu subject configs (all, abstract_algebra, ...)",
        required=("question", "choices", "answer"),
        optional=("subject",),
        read_text=_flat_text,
        read_details=_flat_details,
    ),
    Layout(
        name=f"cais/mmlu auxiliary_train (train: struct of {_STRUCT_FIELDS})",
        required=("train",),
        optional=(),
        read_text=_nested_text,
        read_details=_nested_details,
    ),
]
