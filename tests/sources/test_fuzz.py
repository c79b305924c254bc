"""Issue 14: the source normalizers and local readers under property-based fuzzing.

Valid rows in each raw schema (the project's generators) get random cells replaced by values of
any JSON-like type. Nothing may crash; every row ends accepted or rejected with a reason, and
accepted + rejected = read. CI runs a short pass; ``-m slow`` runs the long one
(``FUZZ_EXAMPLES`` examples per task, 10 minutes in all by default).
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_pipeline.sources import normalize
from gemma_pipeline.sources.loaders import load_local
from gemma_pipeline.sources.sample import generate_gsm8k_raw, generate_mathqa_raw, generate_mmlu_raw

RAW = {
    ("mmlu", "test"): generate_mmlu_raw("test", 6, 0),
    ("mmlu", "train"): generate_mmlu_raw("train", 6, 0),  # auxiliary_train's struct layout
    ("mathqa", "train"): generate_mathqa_raw("train", 6, 0),
    ("gsm8k", "test"): generate_gsm8k_raw("test", 6, 0),
}
SCALARS = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.sampled_from(["", " ", "A", "a ) 1 , b ) 2", "#### 7", "nan", "[1, 2", "{'a': 1}"]),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=6),
    st.dictionaries(st.text(max_size=8), SCALARS, max_size=4),
)


@st.composite
def corrupted(draw, key: tuple[str, str]) -> list[dict]:
    rows = copy.deepcopy(RAW[key].to_dict("records"))
    for _ in range(draw(st.integers(0, 12))):
        row = rows[draw(st.integers(0, len(rows) - 1))]
        target = row
        if isinstance(row.get("train"), dict) and row["train"] and draw(st.booleans()):
            target = row["train"]  # inside auxiliary_train's struct
        field = draw(st.sampled_from(sorted(target)))
        target[field] = draw(VALUES)
    if draw(st.booleans()):
        rows.append(copy.deepcopy(rows[0]))  # a duplicate
    return rows


def _check(key: tuple[str, str], rows: list[dict]) -> None:
    task, split = key
    raw = pd.DataFrame(rows)
    accepted, rejected = normalize(
        task, raw, source=task, split=split, origin=f"fuzz {task}/{split}"
    )
    assert len(accepted) + len(rejected) == len(raw)
    assert rejected["reason"].str.strip().str.len().gt(0).all()
    assert accepted["question"].str.strip().str.len().gt(0).all()


SHORT = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
LONG = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "16000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


@pytest.mark.parametrize("key", list(RAW), ids="/".join)
def test_every_row_is_accepted_or_rejected_with_a_reason(key):
    given(corrupted(key))(SHORT(lambda rows: _check(key, rows)))()


@pytest.mark.slow
@pytest.mark.parametrize("key", list(RAW), ids="/".join)
def test_every_row_is_accepted_or_rejected_long_run(key):
    given(corrupted(key))(LONG(lambda rows: _check(key, rows)))()


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_fuzzed_files_load_or_fail_naming_the_file(suffix, tmp_path):
    @SHORT
    @given(st.binary(max_size=300))
    def check(content: bytes) -> None:
        path = tmp_path / f"fuzzed{suffix}"
        path.write_bytes(content)
        try:
            load_local(path)
        except ValueError as error:
            assert str(path) in str(error)

    check()


def test_unreadable_files_get_one_error_naming_the_file(tmp_path):
    parquet = tmp_path / "cut.parquet"
    pd.DataFrame({"question": ["q"] * 100}).to_parquet(parquet)
    parquet.write_bytes(parquet.read_bytes()[:-40])  # truncated: no footer
    files: dict[Path, bytes | None] = {parquet: None}
    for suffix in (".jsonl", ".json", ".csv"):
        files[tmp_path / f"latin1{suffix}"] = {
            ".jsonl": b'{"question": "caf\xe9"}\n',
            ".json": b'[{"question": "caf\xe9"}]',
            ".csv": b"question\ncaf\xe9\n",
        }[suffix]
    for path, content in files.items():
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ValueError) as error:
            load_local(path)
        assert str(path) in str(error.value), error.value
        if content is not None:
            assert "UTF-8" in str(error.value)
    assert json.loads(json.dumps(str(parquet)))  # the names are plain text


def test_a_huge_line_is_refused_naming_the_file_and_line(tmp_path, monkeypatch):
    from gemma_pipeline.sources import loaders

    # The real limit is 16 Mi characters; a 1 GB line would be refused the same way, after
    # reading no more than the limit.
    monkeypatch.setattr(loaders, "MAX_LINE_CHARS", 1000)
    path = tmp_path / "huge.jsonl"
    path.write_text('{"question": "ok"}\n{"question": "' + "x" * 5000 + '"}\n')
    with pytest.raises(ValueError, match=r"huge\.jsonl' line 2: longer than 1,000"):
        load_local(path)
    path.write_text('{"question": "ok"}\n' * 3)
    assert len(load_local(path)) == 3


@pytest.mark.slow
def test_a_one_gigabyte_line_is_refused_quickly(tmp_path):
    path = tmp_path / "gigabyte.jsonl"
    with path.open("w") as handle:
        handle.write('{"question": "')
        for _ in range(1024):
            handle.write("x" * 2**20)
        handle.write('"}\n')
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"gigabyte\.jsonl' line 1: longer than"):
        load_local(path)
    assert time.perf_counter() - started < 10
