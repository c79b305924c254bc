import re

import pandas as pd
import pytest

from gemma_pipeline.sources import (
    SourceLayoutError,
    generate_gsm8k_raw,
    make_row_id,
    normalize_gsm8k,
)


def _normalize(rows, **kwargs):
    return normalize_gsm8k(
        pd.DataFrame(rows), source="gsm8k", split="test", origin="f.jsonl", **kwargs
    )


def test_rows_keep_their_text_verbatim_and_bad_rows_name_the_field():
    rows = [
        {"question": "How many? ", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"},
        {"question": "No final line?", "answer": "it is 4"},
        {"question": "  ", "answer": "#### 1"},
    ]
    accepted, rejected = _normalize(rows)
    assert accepted["question"].tolist() == ["How many? "]  # lm-eval's prompt uses it as is
    assert accepted["rationale"].tolist() == ["2 + 2 = <<2+2=4>>4\n#### 4"]
    assert accepted["choices"].tolist() == [[]] and accepted["answer"].tolist() == [-1]
    assert rejected["reason"].tolist() == [
        "answer: no final '#### <number>' line to score against",
        "question: empty",
    ]


def test_duplicates_are_rejected_for_training_but_kept_for_benchmarks():
    row = {"question": "q", "answer": "#### 1"}
    row_id = make_row_id("gsm8k", "q", [])  # no choices: the question alone
    accepted, rejected = _normalize([row, row])
    assert accepted["row_id"].tolist() == [row_id]
    assert rejected["reason"].tolist() == [f"duplicate of row {row_id} in the same split"]
    accepted, rejected = _normalize([row, row, row], keep_duplicates=True)
    assert rejected.empty
    assert accepted["row_id"].tolist() == [row_id, f"{row_id}#2", f"{row_id}#3"]


def test_unknown_columns_are_a_layout_error():
    with pytest.raises(SourceLayoutError, match="openai/gsm8k main"):
        _normalize([{"Problem": "p"}])


def test_sample_is_deterministic_disjoint_and_its_arithmetic_is_right():
    test, train = generate_gsm8k_raw("test", 40, 0), generate_gsm8k_raw("train", 80, 0)
    assert test.equals(generate_gsm8k_raw("test", 40, 0))
    assert not set(test["question"]) & set(train["question"])
    for answer in [*test["answer"], *train["answer"]]:
        for expression, value in re.findall(r"<<([^=]+)=(-?\d+)>>", answer):
            assert eval(expression) == int(value), answer  # generated digits only
        steps = re.findall(r"<<[^=]+=(-?\d+)>>", answer)
        assert answer.endswith(f"#### {steps[-1]}")
    accepted, rejected = _normalize(test)
    assert len(accepted) == 40 and rejected.empty
