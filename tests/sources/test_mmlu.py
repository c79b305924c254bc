import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_pipeline.sources import (
    QUESTION_COLUMNS,
    REJECT_COLUMNS,
    SourceLayoutError,
    make_row_id,
    normalize_mmlu,
)
from gemma_pipeline.sources._common import UNEXPECTED

CHOICES = ["Paris", "Rome", "Madrid", "Berlin"]


def run(raw: pd.DataFrame, split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    return normalize_mmlu(raw, source="mmlu", split=split, origin="cais/mmlu")


def flat(**overrides) -> dict:
    row = {"question": "Capital of France?", "subject": "geo", "choices": CHOICES, "answer": 0}
    row.update(overrides)
    return row


def test_flat_layout_is_normalized():
    raw = pd.DataFrame([flat(), flat(question="Capital of Italy?", answer=1)])
    accepted, rejected = run(raw)
    assert list(accepted.columns) == QUESTION_COLUMNS
    assert list(rejected.columns) == REJECT_COLUMNS
    assert rejected.empty
    assert accepted["row_id"].tolist() == [
        make_row_id("mmlu", question, CHOICES)
        for question in ("Capital of France?", "Capital of Italy?")
    ]
    for column, value in [("source", "mmlu"), ("task", "mmlu"), ("split", "test")]:
        assert accepted[column].tolist() == [value, value], column
    assert accepted["subject"].tolist() == ["geo", "geo"]
    assert accepted["choices"].tolist() == [CHOICES, CHOICES]
    assert accepted["answer"].tolist() == [0, 1]
    assert accepted["rationale"].tolist() == [None, None]


def test_auxiliary_train_nested_layout_is_normalized():
    struct = {"question": "Capital of Spain?", "subject": "", "choices": CHOICES, "answer": 2}
    raw = pd.DataFrame({"train": [struct]})
    accepted, rejected = run(raw, split="train")
    assert rejected.empty
    row = accepted.iloc[0]
    assert (row["question"], row["subject"], row["answer"]) == ("Capital of Spain?", "", 2)
    assert row["choices"] == CHOICES


def test_nested_layout_from_parquet_keeps_numpy_choices(tmp_path):
    struct = {"question": "Q?", "subject": "", "choices": np.array(CHOICES), "answer": np.int64(3)}
    raw = pd.DataFrame({"train": [struct]})
    path = tmp_path / "aux.parquet"
    raw.to_parquet(path)
    accepted, rejected = run(pd.read_parquet(path), split="train")
    assert rejected.empty
    assert accepted.iloc[0]["choices"] == CHOICES
    assert accepted.iloc[0]["answer"] == 3


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(2, 2), (np.int64(1), 1), ("3", 3), (" 0 ", 0), (2.0, 2), ("b", 1), ("D", 3), (" c ", 2)],
)
def test_answer_spellings(answer, expected):
    accepted, rejected = run(pd.DataFrame([flat(answer=answer)]))
    assert rejected.empty
    assert accepted.iloc[0]["answer"] == expected


@pytest.mark.parametrize(
    "choices",
    [
        CHOICES,
        tuple(CHOICES),
        np.array(CHOICES, dtype=object),
        str(CHOICES),  # what a CSV round trip of a list leaves
        json.dumps(CHOICES),
        str(np.array(CHOICES)),  # "['Paris' 'Rome' ...]": str() of a numpy array
    ],
)
def test_choices_spellings(choices):
    accepted, rejected = run(pd.DataFrame([flat(choices=choices)]))
    assert rejected.empty, rejected["reason"].tolist()
    assert accepted.iloc[0]["choices"] == CHOICES


def test_missing_or_empty_subject_becomes_empty_string():
    raw = pd.DataFrame([flat(subject=None), flat(question="Other?", subject=float("nan"))])
    accepted, _ = run(raw)
    assert accepted["subject"].tolist() == ["", ""]
    without_column = pd.DataFrame([flat()]).drop(columns="subject")
    accepted, rejected = run(without_column)
    assert rejected.empty
    assert accepted.iloc[0]["subject"] == ""


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (flat(answer=7), "answer: 7 out of range for 4 choices"),
        (flat(answer=-1), "answer: -1 out of range for 4 choices"),
        (flat(answer="E"), "answer: 'E' out of range for 4 choices"),
        (flat(answer="zz"), "answer: 'zz' is not an index 0..3 or a letter A-D"),
        (flat(answer=1.5), "answer: 1.5 is not an index 0..3 or a letter A-D"),
        (flat(answer=True), "answer: True is not an index 0..3 or a letter A-D"),
        (flat(answer=None), "answer: missing"),
        (flat(question="   "), "question: empty"),
        (flat(question=None), "question: missing"),
        (flat(question=12), "question: expected text, found int 12"),
        (flat(choices=["only one"]), "choices: expected 2 to 10 options, found 1"),
        (flat(choices=["a", "", "c", "d"]), "choices: option B is empty"),
        (flat(choices=["a", None, "c", "d"]), "choices: option B is missing"),
        (flat(choices="not a list"), "choices: could not parse 'not a list' as a list or mapping"),
        (flat(choices=None), "choices: missing"),
        (flat(choices=42), "choices: expected a list of options, found int"),
    ],
)
def test_row_problems_are_rejected_with_a_reason(row, reason):
    raw = pd.DataFrame([row])
    accepted, rejected = run(raw)
    assert accepted.empty
    assert list(accepted.columns) == QUESTION_COLUMNS
    assert rejected["reason"].tolist() == [reason]
    assert json.loads(rejected.iloc[0]["raw"])["question"] == (
        row["question"] if isinstance(row["question"], str | int) else None
    )


def test_reject_row_id_is_the_content_hash_when_question_and_choices_parse():
    accepted, rejected = run(pd.DataFrame([flat(), flat(question="Q2", answer=9)]))
    assert len(accepted) == 1
    assert rejected.iloc[0]["row_id"] == make_row_id("mmlu", "Q2", CHOICES)


def test_reject_row_id_falls_back_to_position():
    raw = pd.DataFrame([flat(), flat(), flat(question="")], index=[10, 20, 30])
    _, rejected = run(raw, split="validation")
    # Position in the frame (2), not the index label (30); the duplicate keeps its content id.
    assert rejected["row_id"].tolist() == [
        make_row_id("mmlu", "Capital of France?", CHOICES),
        "mmlu-validation-row2",
    ]


def test_duplicates_within_the_split_are_rejected():
    raw = pd.DataFrame([flat(), flat(answer=1), flat(question="  Capital of France?  ")])
    accepted, rejected = run(raw)
    row_id = make_row_id("mmlu", "Capital of France?", CHOICES)
    assert accepted["row_id"].tolist() == [row_id]
    assert accepted.iloc[0]["answer"] == 0  # first occurrence wins
    assert rejected["reason"].tolist() == [f"duplicate of row {row_id} in the same split"] * 2


def test_nested_row_that_is_not_a_struct_is_rejected():
    raw = pd.DataFrame({"train": [{"question": "Q", "choices": CHOICES, "answer": 0}, 5, "oops"]})
    accepted, rejected = run(raw, split="train")
    assert accepted["question"].tolist() == ["Q"]
    expected = "train: expected a struct with fields question, subject, choices, answer, found"
    assert rejected["row_id"].tolist() == ["mmlu-train-row1", "mmlu-train-row2"]
    assert rejected["reason"].tolist() == [f"{expected} int 5", f"{expected} str 'oops'"]


def test_nested_struct_given_as_json_text_is_read():
    struct = {"question": "Q", "subject": "", "choices": CHOICES, "answer": "A"}
    accepted, rejected = run(pd.DataFrame({"train": [json.dumps(struct)]}), split="train")
    assert rejected.empty
    assert accepted.iloc[0]["answer"] == 0


def test_unknown_layout_raises_before_reading_rows():
    raw = pd.DataFrame({"prompt": ["x"], "label": [1]})
    with pytest.raises(SourceLayoutError) as info:
        normalize_mmlu(raw, source="mmlu", split="test", origin="data/01_raw/weird.csv")
    message = str(info.value)
    assert "data/01_raw/weird.csv" in message
    assert "['prompt', 'label']" in message
    assert "cais/mmlu subject configs" in message and "question, choices, answer" in message
    assert "cais/mmlu auxiliary_train" in message and "requires train" in message
    assert isinstance(info.value, ValueError)
    assert info.value.found == ["prompt", "label"]


def test_empty_frame_with_known_columns_gives_empty_typed_results():
    raw = pd.DataFrame({"question": [], "subject": [], "choices": [], "answer": []})
    accepted, rejected = run(raw)
    assert accepted.empty and rejected.empty
    assert list(accepted.columns) == QUESTION_COLUMNS
    assert accepted["answer"].dtype == "int64"


# Messy cells: anything a careless export could leave in a column.
messy_scalars = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.booleans(),
    st.integers(-5, 12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["A", "b", "3", " d ", "[]", "['x', 'y']", "{'a': 1}", "['a' 'b']"]),
)
messy_choices = st.one_of(
    messy_scalars,
    st.lists(messy_scalars, max_size=12),
    st.lists(st.text(max_size=5), min_size=4, max_size=4).map(np.array),
    st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=5).map(str),
)
messy_flat_rows = st.fixed_dictionaries(
    {
        "question": st.one_of(messy_scalars, st.sampled_from(["Q1", "Q2"])),
        "subject": messy_scalars,
        "choices": st.one_of(messy_choices, st.just(CHOICES)),
        "answer": messy_scalars,
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(messy_flat_rows, max_size=8))
def test_every_row_is_accepted_or_rejected_exactly_once(rows):
    raw = pd.DataFrame(rows, columns=["question", "subject", "choices", "answer"])
    accepted, rejected = run(raw)
    assert len(accepted) + len(rejected) == len(raw)
    assert list(accepted.columns) == QUESTION_COLUMNS
    assert list(rejected.columns) == REJECT_COLUMNS
    assert accepted["row_id"].is_unique
    assert not any(reason.startswith(UNEXPECTED) for reason in rejected["reason"])
    for raw_text in rejected["raw"]:
        json.loads(raw_text)
    for _, row in accepted.iterrows():
        assert 0 <= row["answer"] < len(row["choices"])


@settings(max_examples=40, deadline=None)
@given(structs=st.lists(st.one_of(messy_scalars, messy_flat_rows), max_size=6))
def test_every_nested_row_is_accepted_or_rejected_exactly_once(structs):
    raw = pd.DataFrame({"train": pd.Series(structs, dtype=object)})
    accepted, rejected = run(raw, split="train")
    assert len(accepted) + len(rejected) == len(raw)
    assert not any(reason.startswith(UNEXPECTED) for reason in rejected["reason"])
