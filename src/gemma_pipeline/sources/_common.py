"""Machinery shared by the source normalizers: layout detection, cell parsing helpers and
the loop that sends every raw row to exactly one of (accepted, rejected)."""

from __future__ import annotations

import ast
import io
import json
import math
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gemma_pipeline.sources.errors import SourceLayoutError
from gemma_pipeline.sources.schema import QUESTION_COLUMNS, REJECT_COLUMNS, make_row_id

Row = Mapping[str, Any]

#: Prefix of the reason given to rows that tripped an unforeseen error; tests assert that no
#: generated input ever produces it, so a bug still shows up there instead of hiding here.
UNEXPECTED = "unexpected error while reading this row"


class RowProblem(Exception):
    """A row-level defect; caught by :func:`normalize_rows` and turned into a reject."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RowDetails:
    """Everything of a normalized row besides the text that identifies it."""

    subject: str
    answer: int
    rationale: str | None
    raw_options: str | None  # the options as the source wrote them, when it wrote one text


#: Reads (question, choices) from a raw row; these two fix the row id.
TextReader = Callable[[Row], tuple[str, list[str]]]
#: Reads the remaining fields, given the number of choices already parsed.
DetailsReader = Callable[[Row, int], RowDetails]


@dataclass(frozen=True)
class Layout:
    """One known raw layout of a source, recognized by its column names."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    read_text: TextReader
    read_details: DetailsReader

    def matches(self, columns: set[str]) -> bool:
        return set(self.required) <= columns

    def describe(self, columns: set[str]) -> str:
        text = "requires " + ", ".join(self.required)
        if self.optional:
            text += " (optional: " + ", ".join(self.optional) + ")"
        missing = [column for column in self.required if column not in columns]
        if missing:
            text += "; missing " + ", ".join(missing)
        return text


def detect_layout(raw: pd.DataFrame, layouts: list[Layout], *, task: str, origin: str) -> Layout:
    """First layout whose required columns are all present; raise SourceLayoutError otherwise."""
    if not isinstance(raw, pd.DataFrame):
        raise TypeError(
            f"{task} source {origin!r}: expected a pandas DataFrame, got {type_name(raw)}"
        )
    columns = {str(column) for column in raw.columns}
    for layout in layouts:
        if layout.matches(columns):
            return layout
    raise SourceLayoutError(
        task=task,
        origin=origin,
        found=list(raw.columns),
        expected={layout.name: layout.describe(columns) for layout in layouts},
    )


def normalize_rows(
    raw: pd.DataFrame,
    layout: Layout,
    *,
    source: str,
    task: str,
    split: str,
    keep_duplicates: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Send every raw row to exactly one of the two returned frames (accepted, rejected).

    A repeated row is rejected, unless ``keep_duplicates`` (benchmarks score every row, as
    lm-eval does): then its id gets a ``#<n>`` suffix.
    """
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, row in enumerate(raw.to_dict(orient="records")):
        row_id = f"{source}-{split}-row{index}"
        try:
            question, choices = layout.read_text(row)
            row_id = make_row_id(source, question, choices)
            details = layout.read_details(row, len(choices))
            if row_id in seen:
                if not keep_duplicates:
                    raise RowProblem(f"duplicate of row {row_id} in the same split")
                copy = 2
                while f"{row_id}#{copy}" in seen:
                    copy += 1
                row_id = f"{row_id}#{copy}"
        except RowProblem as problem:
            rejected.append(_reject(source, split, row_id, problem.reason, row))
            continue
        except Exception as exc:  # a row must never take the whole source down
            reason = f"{UNEXPECTED}: {type(exc).__name__}: {exc}"
            rejected.append(_reject(source, split, row_id, reason, row))
            continue
        seen.add(row_id)
        accepted.append(
            {
                "row_id": row_id,
                "source": source,
                "task": task,
                "split": split,
                "subject": details.subject,
                "question": question,
                "choices": choices,
                "answer": details.answer,
                "rationale": details.rationale,
                "raw_options": details.raw_options,
            }
        )
    return questions_frame(accepted), rejects_frame(rejected)


def questions_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Normalized questions with fixed dtypes, so empty and full results look alike."""
    object_columns = {"choices", "rationale", "raw_options"}  # lists; None must stay None
    data = {}
    for column in QUESTION_COLUMNS:
        values = [record[column] for record in records]
        if column in object_columns:
            data[column] = pd.Series(values, dtype=object)
        elif column == "answer":
            data[column] = pd.Series(values, dtype="int64")
        else:
            data[column] = pd.Series(values, dtype="str")
    return pd.DataFrame(data, columns=QUESTION_COLUMNS)


def rejects_frame(records: list[dict[str, str]]) -> pd.DataFrame:
    data = {
        column: pd.Series([record[column] for record in records], dtype="str")
        for column in REJECT_COLUMNS
    }
    return pd.DataFrame(data, columns=REJECT_COLUMNS)


def _reject(source: str, split: str, row_id: str, reason: str, row: Row) -> dict[str, str]:
    return {
        "source": source,
        "split": split,
        "row_id": row_id,
        "reason": reason,
        "raw": raw_json(row),
    }


def raw_json(row: Row) -> str:
    """The raw row as JSON, readable even when it holds numpy arrays, NaN or odd objects."""
    return json.dumps(to_jsonable(dict(row)), ensure_ascii=False, default=str)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        # Bare NaN/Infinity are not JSON; NaN here always means "missing" in pandas.
        return None if math.isnan(value) else str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if is_missing(value):
        return None
    return str(value)


def is_missing(value: Any) -> bool:
    """True for the scalar spellings of "no value" that pandas and JSON produce."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def type_name(value: Any) -> str:
    return type(value).__name__


def require_text(value: Any, field: str) -> str:
    """Stripped, non-empty text or a RowProblem naming the field."""
    if is_missing(value):
        raise RowProblem(f"{field}: missing")
    if not isinstance(value, str):
        raise RowProblem(f"{field}: expected text, found {type_name(value)} {short(value)}")
    text = value.strip()
    if not text:
        raise RowProblem(f"{field}: empty")
    return text


def optional_text(value: Any, field: str) -> str:
    """Stripped text, "" when missing; numbers are accepted because CSV readers produce them."""
    if is_missing(value):
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return str(value)
    raise RowProblem(f"{field}: expected text, found {type_name(value)} {short(value)}")


def option_text(value: Any, label: str) -> str:
    """One option's text; numbers are turned into text, everything else must be a string."""
    if is_missing(value):
        raise ValueError(f"option {label} is missing")
    if isinstance(value, bool) or not isinstance(
        value, str | int | float | np.integer | np.floating
    ):
        raise ValueError(f"option {label} is a {type_name(value)}, expected text")
    text = str(value).strip()
    if not text:
        raise ValueError(f"option {label} is empty")
    return text


def short(value: Any, limit: int = 60) -> str:
    """repr() cut to a length that keeps reasons readable."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_literal(text: str) -> Any:
    """A JSON or Python literal from text (CSV cells hold lists and dicts this way).

    Never eval(): only ast.literal_eval. numpy's list repr (``['a' 'b']``) is recognized
    first because literal_eval would silently glue its adjacent strings into one.
    """
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    as_numpy = _numpy_string_list(stripped)
    if as_numpy is not None:
        return as_numpy
    try:
        return ast.literal_eval(stripped)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ValueError(f"could not parse {short(text)} as a list or mapping") from exc


def _numpy_string_list(text: str) -> list[str] | None:
    """Items of ``['a' 'b' 'c']`` (str() of a numpy array of strings), else None."""
    try:
        tokens = [
            token
            for token in tokenize.generate_tokens(io.StringIO(text).readline)
            if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER)
        ]
    except (tokenize.TokenError, SyntaxError, ValueError):
        return None
    if len(tokens) < 4:
        return None
    inner = tokens[1:-1]
    if (
        tokens[0].string != "["
        or tokens[-1].string != "]"
        or any(token.type != tokenize.STRING for token in inner)
    ):
        return None
    try:
        return [str(ast.literal_eval(token.string)) for token in inner]
    except (ValueError, SyntaxError):
        return None
