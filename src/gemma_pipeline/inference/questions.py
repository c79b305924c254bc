"""What ``ask`` reads and writes: a JSONL file of questions, an MMLU-style row, the answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gemma_pipeline.sources.schema import LETTERS

from .errors import UserInputError


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """One JSON object per line, each with a non-empty ``question``; blank lines are skipped.

    Every line is checked before any model loads: the error names the file and the line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: cannot read it ({error})") from error
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserInputError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
        if not isinstance(row, dict):
            raise UserInputError(f"{path}, line {number}: expected a JSON object")
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise UserInputError(f"{path}, line {number}: field 'question' is missing or empty")
        rows.append(row)
    if not rows:
        raise UserInputError(f"{path}: no questions in it")
    return rows


def write_answers(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Written whole to a new file: an existing one is never overwritten."""
    path = Path(path)
    try:
        with path.open("x", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    except FileExistsError as error:
        raise UserInputError(f"--out {path} exists; choose another file or remove it") from error
    except OSError as error:
        raise UserInputError(f"--out {path}: cannot write it ({error})") from error


def check_writable(path: str | Path) -> None:
    """Fail before generating for minutes, not after."""
    path = Path(path)
    if path.exists():
        raise UserInputError(f"--out {path} exists; choose another file or remove it")
    if not path.parent.resolve().is_dir():
        raise UserInputError(f"--out {path}: no folder {path.parent}")


def multiple_choice_row(value: str) -> dict[str, Any]:
    """An MMLU-style row (``question``, ``choices``; optional ``subject``, ``answer``) given as
    JSON text or as the path of a JSON file."""
    source = value
    if not value.lstrip().startswith("{"):
        try:
            value = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UserInputError(f"--row {source}: not JSON and not a readable file") from error
    try:
        row = json.loads(value)
    except json.JSONDecodeError as error:
        raise UserInputError(f"--row {source[:60]}: not valid JSON ({error.msg})") from error
    if not isinstance(row, dict):
        raise UserInputError("--row: expected a JSON object")
    return multiple_choice(
        row.get("question"), row.get("choices"), row.get("subject", ""), row.get("answer")
    )


def multiple_choice(
    question: Any, choices: Any, subject: Any = "", answer: Any = None
) -> dict[str, Any]:
    """A validated question row, as ``format_prompts`` formats it (task ``mmlu``)."""
    if not isinstance(question, str) or not question.strip():
        raise UserInputError("field 'question' is missing or empty")
    if (
        not isinstance(choices, list)
        or not 2 <= len(choices) <= len(LETTERS)
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise UserInputError(
            f"field 'choices' must be a list of 2 to {len(LETTERS)} non-empty strings"
        )
    if not isinstance(subject, str):
        raise UserInputError("field 'subject' must be a string")
    if answer is not None and (
        isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices)
    ):
        raise UserInputError(f"field 'answer' must be an option index from 0 to {len(choices) - 1}")
    return {
        "task": "mmlu",
        "subject": subject,
        "question": question,
        "choices": list(choices),
        "answer": answer,
    }
