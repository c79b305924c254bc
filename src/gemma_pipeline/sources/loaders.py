"""Read raw source frames from local files or the Hugging Face Hub, without interpreting them.

Interpretation (layouts, bad rows) is the normalizers' job; loaders only fail on things
no normalizer could fix: a missing file, an unknown format, an unreachable Hub.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

LOCAL_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
#: The longest JSON line read (characters). The longest real row (a RACE passage with its
#: question) is a few kB; a line past this is a broken file, not a row to hold in memory.
MAX_LINE_CHARS = 16 * 2**20

DEMO_HINT = "to work offline, run the embedded sample data instead: `kedro run --env demo`"


def load_local(path: str | Path) -> pd.DataFrame:
    """Load a raw source file by extension: .jsonl, .json, .csv or .parquet."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LOCAL_EXTENSIONS:
        raise ValueError(
            f"cannot load {str(path)!r}: unsupported extension {suffix or '(none)'!r}; "
            f"expected one of {', '.join(LOCAL_EXTENSIONS)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"source file not found: {str(path)!r}")
    try:
        return _read(path, suffix)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"cannot read {str(path)!r}: it is not valid UTF-8 ({error.reason}, byte "
            f"{error.object[error.start : error.start + 1]!r})"
        ) from None
    except (pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as error:
        raise ValueError(f"cannot read {str(path)!r}: {error}") from None


def _read(path: Path, suffix: str) -> pd.DataFrame:
    if suffix == ".jsonl":
        return pd.DataFrame(_read_json_lines(path))
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".csv":
        # Only empty cells are missing: an option that reads "None" or "NA" is still text.
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    return pd.read_parquet(path)


def _read_json_lines(path: Path) -> list[Any]:
    records = []
    with path.open(encoding="utf-8") as handle:
        number = 0
        while line := handle.readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(line) > MAX_LINE_CHARS:
                raise ValueError(
                    f"{str(path)!r} line {number}: longer than {MAX_LINE_CHARS:,} characters "
                    "(not a row: is the file broken, or not JSON lines?)"
                )
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{str(path)!r} line {number}: invalid JSON ({exc})") from None
    return records


def _read_json(path: Path) -> pd.DataFrame:
    """A records list, a dict of columns, ``{"data": [...]}``, the datasets-server
    ``{"rows": [{"row": {...}}]}`` shape, or JSON lines (``Dataset.to_json`` writes those
    even to a .json file)."""
    text = path.read_text(encoding="utf-8")
    try:
        content = json.loads(text)
    except json.JSONDecodeError:
        return pd.DataFrame(_read_json_lines(path))
    if isinstance(content, dict):
        for key in ("data", "rows"):
            if isinstance(content.get(key), list):
                content = content[key]
                break
    if isinstance(content, list):
        if content and all(
            isinstance(item, dict) and isinstance(item.get("row"), dict) for item in content
        ):
            content = [item["row"] for item in content]
        if all(isinstance(item, dict) for item in content):
            return pd.DataFrame(content)
    elif (
        isinstance(content, dict)
        and content
        and all(isinstance(column, list) for column in content.values())
    ):
        lengths = {len(column) for column in content.values()}
        if len(lengths) == 1:
            return pd.DataFrame(content)
    raise ValueError(
        f"cannot load {str(path)!r}: expected a list of records, a dict of equal-length columns, "
        '{"data": [records]}, {"rows": [{"row": record}]} or JSON lines'
    )


def load_hub(
    path: str,
    name: str | None,
    split: str,
    revision: str | None = None,
    token: str | None = None,
) -> pd.DataFrame:
    """One split of a Hub dataset as a pandas frame (``datasets.load_dataset(...).to_pandas()``)."""
    described = f"{path!r} (config {name!r}, split {split!r}, revision {revision or 'default'!r})"
    try:
        import datasets  # deferred: importing datasets costs seconds that offline runs never need

        dataset = datasets.load_dataset(path, name, split=split, revision=revision, token=token)
        frame = dataset.to_pandas()
    except Exception as exc:
        raise RuntimeError(
            f"could not reach or read the Hugging Face Hub dataset {described}: "
            f"{type(exc).__name__}: {exc}. Check the network, the dataset id, config and split; "
            f"{DEMO_HINT}"
        ) from exc
    if not isinstance(frame, pd.DataFrame):
        raise RuntimeError(f"Hub dataset {described} did not give a single frame; {DEMO_HINT}")
    return frame
