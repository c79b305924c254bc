import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemma_pipeline.sources import (
    QUESTION_COLUMNS,
    REJECT_COLUMNS,
    SourceLayoutError,
    make_row_id,
    normalize_mathqa,
    parse_options,
)
from gemma_pipeline.sources._common import UNEXPECTED

JOINED = "a ) 38 , b ) 27.675 , c ) 30 , d ) data inadequate , e ) none of these"
TEXTS = ["38", "27.675", "30", "data inadequate", "none of these"]
FIVE = ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (JOINED, TEXTS),
        ("['a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5']", FIVE),
        ("['a ) 1', 'b ) 2', 'c ) 3', 'd ) 4', 'e ) 5']", FIVE),
        ('["a ) 1", "b ) 2", "c ) 3", "d ) 4", "e ) 5"]', FIVE),
        ("a ) a ) 1055 , b ) 2 , c ) 3 , d ) 4 , e ) 5", ["1055", "2", "3", "4", "5"]),
        (
            "a ) 1,200 , b ) 3,400.5 , c ) 5,000 , d ) 6 , e ) 7,7",
            ["1,200", "3,400.5", "5,000", "6", "7,7"],
        ),
        ("A)1,b)2,C) 3 ,d )4, e ) 5", FIVE),
        ({"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}, FIVE),
        ({"E": "5", "D": "4", "C": "3", "B": "2", "A": "1"}, FIVE),
        ('{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}', FIVE),
        ({"a": 1, "b": 2.5, "c": "a ) x", "d": "d ) 4", "e": "5"}, ["1", "2.5", "a ) x", "4", "5"]),
        (FIVE, FIVE),
        (["a ) 1", "b ) 2", "c ) 3", "d ) 4", "e ) 5"], FIVE),
        (("a ) 1", "b) 2", "3", "d ) 4", "5"), FIVE),
        (np.array(FIVE), FIVE),
        (["a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5"], FIVE),
    ],
)
def test_parse_options_formats(value, expected):
    assert parse_options(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a ) 1 , b ) 2 , c ) 3 , d ) 4", "expected 5 options a..e, found 4"),
        ("a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5 , f ) 6", "found 6 (a, b, c, d, e, f)"),
        ("a ) 1 , c ) 2 , b ) 3 , d ) 4 , e ) 5", "expected option letters a..e in order"),
        ("b ) 1 , c ) 2 , d ) 3 , e ) 4", "found 4 (b, c, d, e)"),
        ("a ) 1 , b ) , c ) 3 , d ) 4 , e ) 5", "option b is empty"),
        ("a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) ", "option e is empty"),
        ("", "empty text"),
        ("   ", "empty text"),
        ("just some words", "expected labelled options"),
        (["1", "2", "3", "4"], "expected 5 options a..e, found 4"),
        (["a ) 1", "c ) 2", "b ) 3", "d ) 4", "e ) 5"], "option b is labelled 'c'"),
        (["1", "", "3", "4", "5"], "option b is empty"),
        (["1", None, "3", "4", "5"], "option b is missing"),
        (["1", ["x"], "3", "4", "5"], "option b is a list"),
        ({"a": "1", "b": "2", "c": "3", "d": "4"}, "expected keys a..e, found a, b, c, d"),
        ({"a": "1", "A": "1", "b": "2", "c": "3", "d": "4"}, "expected keys a..e"),
        ("[1, 2", "could not parse"),
        ("[1, 2, 3, 4]", "expected 5 options a..e, found 4"),
        (5, "found int"),
        (None, "missing"),
    ],
)
def test_parse_options_rejects_with_a_clear_message(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_options(value)


def allenai(**overrides) -> dict:
    row = {
        "Problem": "what is 2 + 2 ?",
        "Rationale": '"explanation : 2 + 2 = 4 . answer : c"',
        "options": "a ) 2 , b ) 3 , c ) 4 , d ) 5 , e ) 6",
        "correct": "c",
        "annotated_formula": "add(n0,n1)",
        "linear_formula": "add(n0,n1)|",
        "category": "general",
    }
    row.update(overrides)
    return row


def run(raw: pd.DataFrame, split: str = "train") -> tuple[pd.DataFrame, pd.DataFrame]:
    return normalize_mathqa(raw, source="mathqa", split=split, origin="allenai/math_qa")


def test_allenai_layout_is_normalized():
    accepted, rejected = run(pd.DataFrame([allenai()]))
    assert list(accepted.columns) == QUESTION_COLUMNS
    assert rejected.empty
    row = accepted.iloc[0]
    assert row["row_id"] == make_row_id("mathqa", "what is 2 + 2 ?", ["2", "3", "4", "5", "6"])
    assert (row["task"], row["subject"], row["answer"]) == ("mathqa", "general", 2)
    assert row["choices"] == ["2", "3", "4", "5", "6"]
    # The pair of literal quotes allenai/math_qa wraps rationales in is dropped.
    assert row["rationale"] == "explanation : 2 + 2 = 4 . answer : c"


def test_calc_math_qa_layout_is_normalized():
    raw = pd.DataFrame(
        [
            {
                "question": "what is 3 × 3 ?",
                "options": {"A": "6", "B": "9", "C": "12", "D": "3", "E": "0"},
                "correct_option": "B",
                "rationale": "3 × 3 = 9",
                "id": "x1",
            }
        ]
    )
    accepted, rejected = run(raw)
    assert rejected.empty
    row = accepted.iloc[0]
    assert (row["question"], row["answer"], row["subject"]) == ("what is 3 × 3 ?", 1, "")
    assert row["choices"] == ["6", "9", "12", "3", "0"]
    assert row["rationale"] == "3 × 3 = 9"


def test_lowercase_layout_is_normalized_with_and_without_category():
    row = {"problem": "p ?", "rationale": "", "options": FIVE, "correct": " D "}
    with_category = pd.DataFrame([{**row, "category": "gain"}])
    accepted, rejected = run(with_category)
    assert rejected.empty
    assert (accepted.iloc[0]["answer"], accepted.iloc[0]["subject"]) == (3, "gain")
    assert accepted.iloc[0]["rationale"] is None  # empty rationale means none
    accepted, _ = run(pd.DataFrame([row]))
    assert accepted.iloc[0]["subject"] == ""


def test_rationale_column_is_optional():
    raw = pd.DataFrame([allenai()]).drop(columns=["Rationale"])
    accepted, rejected = run(raw)
    assert rejected.empty
    assert accepted.iloc[0]["rationale"] is None


@pytest.mark.parametrize(
    "options",
    [
        " a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5 \n",
        "['a ) 1', 'b ) 2', 'c ) 3', 'd ) 4', 'e ) 5']",
        "a ) a ) 1 , b ) b ) 2 , c ) c ) 3 , d ) d ) 4 , e ) e ) 5",
    ],
)
def test_options_text_is_kept_as_written_and_the_row_id_still_hashes_clean_choices(options):
    accepted, rejected = run(pd.DataFrame([allenai(options=options)]))
    assert rejected.empty
    row = accepted.iloc[0]
    assert row["raw_options"] == options
    assert row["choices"] == FIVE == parse_options(options)
    assert row["row_id"] == make_row_id("mathqa", "what is 2 + 2 ?", parse_options(options))


@pytest.mark.parametrize(
    ("row", "raw_options"),
    [
        ({"question": "q ?", "options": JOINED, "correct_option": "a"}, JOINED),
        (
            {
                "question": "q ?",
                "options": dict(zip("ABCDE", FIVE, strict=True)),
                "correct_option": "a",
            },
            None,
        ),
        ({"problem": "q ?", "options": JOINED, "correct": "a"}, JOINED),
        ({"problem": "q ?", "options": FIVE, "correct": "a"}, None),
        ({"problem": "q ?", "options": np.array(FIVE), "correct": "a"}, None),
        ({"problem": "q ?", "options": [JOINED], "correct": "a"}, None),
    ],
    ids=["calc-text", "calc-mapping", "lowercase-text", "list", "array", "list-of-one-text"],
)
def test_raw_options_only_where_every_layout_gives_one_text(row, raw_options):
    accepted, rejected = run(pd.DataFrame([row]))
    assert rejected.empty
    assert accepted.iloc[0]["raw_options"] == raw_options


@pytest.mark.parametrize("correct", ["a", "C", " d ", "E", "b )"])
def test_correct_letter_any_case(correct):
    accepted, _ = run(pd.DataFrame([allenai(correct=correct)]))
    assert accepted.iloc[0]["answer"] == "abcde".index(correct.strip()[0].lower())


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            allenai(options="a ) 1 , b ) 2 , c ) 3 , d ) 4"),
            "options: expected 5 options a..e, found 4",
        ),
        (allenai(correct="z"), "correct: 'z' is not one of a..e"),
        (allenai(correct=2), "correct: 2 is not one of a..e"),
        (allenai(correct=None), "correct: missing"),
        (allenai(Problem=""), "Problem: empty"),
        (allenai(options=None), "options: missing"),
    ],
)
def test_row_problems_are_rejected_with_a_reason(row, reason):
    accepted, rejected = run(pd.DataFrame([row]), split="validation")
    assert accepted.empty
    assert rejected["reason"].tolist() == [reason]
    assert rejected.iloc[0]["source"] == "mathqa"
    assert rejected.iloc[0]["split"] == "validation"
    assert json.loads(rejected.iloc[0]["raw"])["annotated_formula"] == "add(n0,n1)"


def test_calc_layout_reason_names_its_own_column():
    raw = pd.DataFrame([{"question": "q", "options": FIVE, "correct_option": "x"}])
    _, rejected = run(raw)
    assert rejected["reason"].tolist() == ["correct_option: 'x' is not one of a..e"]


def test_duplicates_and_mixed_rows_keep_the_invariant():
    raw = pd.DataFrame(
        [allenai(), allenai(correct="a"), allenai(Problem="other ?"), allenai(options="junk")]
    )
    accepted, rejected = run(raw)
    assert accepted["question"].tolist() == ["what is 2 + 2 ?", "other ?"]
    row_id = make_row_id("mathqa", "what is 2 + 2 ?", ["2", "3", "4", "5", "6"])
    # The duplicate keeps its content id; the row whose options do not parse, its position.
    assert rejected["row_id"].tolist() == [row_id, "mathqa-train-row3"]
    with pytest.raises(ValueError) as junk:
        parse_options("junk")
    assert rejected["reason"].tolist() == [
        f"duplicate of row {row_id} in the same split",
        f"options: {junk.value}",
    ]


def test_unknown_layout_names_origin_columns_and_every_layout():
    raw = pd.DataFrame({"Problem": ["p"], "answer": ["a"]})
    with pytest.raises(SourceLayoutError) as info:
        normalize_mathqa(raw, source="mathqa", split="train", origin="data/01_raw/mq.jsonl")
    message = str(info.value)
    assert "'data/01_raw/mq.jsonl'" in message
    assert "['Problem', 'answer']" in message
    for layout, columns in [
        ("allenai/math_qa", "Problem, options, correct"),
        ("MU-NLPC/Calc-math_qa", "question, options, correct_option"),
        ("lowercase math_qa export", "problem, options, correct"),
    ]:
        assert f"{layout}: requires {columns}" in message
    assert "missing options, correct" in message


messy = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.integers(-3, 9),
    st.text(max_size=10),
    st.sampled_from(["a", "E", " c ", "f", JOINED, "a ) 1 , b ) 2", "['a ) 1']", "{}"]),
)
messy_options = st.one_of(
    messy,
    st.lists(st.one_of(messy, st.text(max_size=4)), max_size=7),
    st.dictionaries(st.sampled_from("abcdefABCDE"), messy, max_size=6),
    st.lists(st.sampled_from(TEXTS), min_size=5, max_size=5).map(
        lambda texts: " , ".join(
            f"{letter} ) {text}" for letter, text in zip("abcde", texts, strict=True)
        )
    ),
)
messy_rows = st.fixed_dictionaries(
    {
        "Problem": st.one_of(messy, st.sampled_from(["p1 ?", "p2 ?"])),
        "Rationale": messy,
        "options": messy_options,
        "correct": messy,
        "category": messy,
    }
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(messy_rows, max_size=8))
def test_every_row_is_accepted_or_rejected_exactly_once(rows):
    raw = pd.DataFrame(rows, columns=["Problem", "Rationale", "options", "correct", "category"])
    accepted, rejected = run(raw)
    assert len(accepted) + len(rejected) == len(raw)
    assert list(rejected.columns) == REJECT_COLUMNS
    assert accepted["row_id"].is_unique
    assert all(len(choices) == 5 for choices in accepted["choices"])
    assert not any(reason.startswith(UNEXPECTED) for reason in rejected["reason"])
    assert all(reason.split(":")[0] for reason in rejected["reason"])
    for raw_text in rejected["raw"]:
        json.loads(raw_text)
