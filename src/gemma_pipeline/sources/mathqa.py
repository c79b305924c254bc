"""Normalizer for Math-QA-style sources: five options a..e, a letter answer and a rationale."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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

TASK = "mathqa"
OPTION_LETTERS = "abcde"

# A label at the very start of a text: "a ) ", "A)", " c ) ".
_HEAD = re.compile(r"\s*([a-z])\s*\)\s*", re.IGNORECASE)
# Every label that starts an option in a joined options string; only used to explain errors,
# so a comma inside a number ("1,200") must not count: a label needs "letter )" after it.
_ANY_LABEL = re.compile(r"(?:^|,)\s*([a-z])\s*\)", re.IGNORECASE)


def normalize_mathqa(
    raw: pd.DataFrame,
    *,
    source: str,
    split: str,
    origin: str,
    keep_duplicates: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn a raw Math-QA frame into (accepted questions, rejected rows).

    ``origin`` (a file path or hub id) only serves error messages. Raises
    :class:`~gemma_pipeline.sources.errors.SourceLayoutError` when the columns match no known
    layout; problems within a row never raise, they put the row in the rejected frame.
    """
    layout = detect_layout(raw, LAYOUTS, task=TASK, origin=origin)
    return normalize_rows(
        raw, layout, source=source, task=TASK, split=split, keep_duplicates=keep_duplicates
    )


def parse_options(value: Any) -> list[str]:
    """The five option texts, in order a..e, without their letters.

    Accepts the joined string ``"a ) 38 , b ) 27.675 , ..."``, the text of a Python/JSON list
    or dict, a mapping keyed a..e, or a sequence of five texts with or without labels.
    Raises ValueError saying what is wrong otherwise.
    """
    if is_missing(value):
        raise ValueError("missing")
    if isinstance(value, str):
        return _from_text(value)
    if isinstance(value, Mapping):
        return _from_mapping(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return _from_sequence(value)
    raise ValueError(f"expected text, a list or a mapping a..e, found {type_name(value)}")


def _from_text(text: str) -> list[str]:
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty text")
    if stripped[0] in "[{":
        parsed = parse_literal(stripped)
        if not isinstance(parsed, Mapping | list | tuple):
            raise ValueError(f"expected a list or mapping of options, found {short(text)}")
        return parse_options(parsed)
    return _split_labelled(stripped)


def _from_mapping(mapping: Mapping[Any, Any]) -> list[str]:
    by_letter = {
        str(key).strip().rstrip(")").strip().lower(): item for key, item in mapping.items()
    }
    if len(by_letter) != len(mapping) or sorted(by_letter) != list(OPTION_LETTERS):
        keys = ", ".join(str(key) for key in mapping) or "none"
        raise ValueError(f"expected keys a..e, found {keys}")
    return [_clean(option_text(by_letter[letter], letter), letter) for letter in OPTION_LETTERS]


def _from_sequence(items: Sequence[Any]) -> list[str]:
    if len(items) == 1 and isinstance(items[0], str):
        # MathQA dumps sometimes wrap the whole joined string in a one-element list.
        return _split_labelled(items[0].strip())
    if len(items) != len(OPTION_LETTERS):
        raise ValueError(f"expected 5 options a..e, found {len(items)}")
    texts = []
    for letter, item in zip(OPTION_LETTERS, items, strict=True):
        text = option_text(item, letter)
        label = _HEAD.match(text)
        if label and label.group(1).lower() in OPTION_LETTERS and label.group(1).lower() != letter:
            raise ValueError(
                f"option {letter} is labelled {label.group(1)!r}; expected letters a..e in order"
            )
        texts.append(_clean(text, letter))
    return texts


def _split_labelled(text: str) -> list[str]:
    """Split ``"a ) x , b ) y , ..."`` only at the separator that precedes the next letter."""
    found = [letter.lower() for letter in _ANY_LABEL.findall(text)]
    head = _HEAD.match(text)
    if head is None:
        raise ValueError(f"expected labelled options like 'a ) .. , b ) ..', found {short(text)}")
    if head.group(1).lower() != "a":
        raise ValueError(_label_problem(found))
    pieces = []
    position = head.end()
    for letter in OPTION_LETTERS[1:]:
        separator = re.compile(rf"\s*,\s*{letter}\s*\)\s*", re.IGNORECASE).search(text, position)
        if separator is None:
            raise ValueError(_label_problem(found))
        pieces.append(text[position : separator.start()])
        position = separator.end()
    pieces.append(text[position:].rstrip(" ,"))
    if found != list(OPTION_LETTERS):
        # The sequential split succeeded but skipped a stray label, e.g. "a , c , b" order
        # or a sixth option glued onto e.
        raise ValueError(_label_problem(found))
    return [_clean(piece, letter) for letter, piece in zip(OPTION_LETTERS, pieces, strict=True)]


def _label_problem(found: list[str]) -> str:
    letters = ", ".join(found) or "none"
    expected = list(OPTION_LETTERS)
    if len(found) < len(expected) and found == expected[: len(found)]:
        return f"expected 5 options a..e, found {len(found)}"
    if found == sorted(set(found)):
        return f"expected 5 options a..e, found {len(found)} ({letters})"
    return f"expected option letters a..e in order, found {letters}"


def _clean(text: str, letter: str) -> str:
    """Strip the option's own label, repeated ("a ) a ) 1055" occurs in MathQA)."""
    text = text.strip()
    while (label := _HEAD.match(text)) and label.group(1).lower() == letter:
        text = text[label.end() :].strip()
    if not text:
        raise ValueError(f"option {letter} is empty")
    return text


def parse_correct(value: Any, field: str) -> int:
    """Index of the correct option from a letter a..e in any case, e.g. " C " or "d )"."""
    if is_missing(value):
        raise RowProblem(f"{field}: missing")
    if isinstance(value, str):
        letter = value.strip().rstrip(")").strip().lower()
        if len(letter) == 1 and letter in OPTION_LETTERS:
            return OPTION_LETTERS.index(letter)
    raise RowProblem(f"{field}: {short(value)} is not one of a..e")


def _rationale(value: Any, field: str) -> str | None:
    text = optional_text(value, field)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        # allenai/math_qa wraps every rationale in a pair of literal double quotes.
        text = text[1:-1].strip()
    return text or None


def _options(value: Any) -> list[str]:
    try:
        return parse_options(value)
    except ValueError as exc:
        raise RowProblem(f"options: {exc}") from None


def _raw_options(value: Any) -> str | None:
    """The options exactly as the source wrote them when it wrote one text, else None.

    lm-eval's ``mathqa`` task reads its choices from this text with a regex, quirks and all
    (``evaluation/tasks/mathqa.py``). A list or mapping of options is not text lm-eval could
    read, and any text made of it here would be ours, not the source's: None.
    """
    return str(value) if isinstance(value, str) else None


def _layout(name: str, *, question: str, correct: str, rationale: str, category: str) -> Layout:
    def read_text(row: Row) -> tuple[str, list[str]]:
        return require_text(row.get(question), question), _options(row.get("options"))

    def read_details(row: Row, n_choices: int) -> RowDetails:
        return RowDetails(
            subject=optional_text(row.get(category), category),
            answer=parse_correct(row.get(correct), correct),
            rationale=_rationale(row.get(rationale), rationale),
            raw_options=_raw_options(row.get("options")),
        )

    return Layout(
        name=name,
        required=(question, "options", correct),
        optional=(rationale, category),
        read_text=read_text,
        read_details=read_details,
    )


LAYOUTS: list[Layout] = [
    _layout(
        "allenai/math_qa",
        question="Problem",
        correct="correct",
        rationale="Rationale",
        category="category",
    ),
    _layout(
        "MU-NLPC/Calc-math_qa",
        question="question",
        correct="correct_option",
        rationale="rationale",
        category="category",
    ),
    _layout(
        "lowercase math_qa export",
        question="problem",
        correct="correct",
        rationale="rationale",
        category="category",
    ),
]
