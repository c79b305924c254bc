import json

import pandas as pd
import pytest

from gemma_pipeline.pipelines.ingest.nodes import ingest_sources, quarantine_leaked_rows
from gemma_pipeline.sources import SourceLayoutError
from gemma_pipeline.sources.schema import QUESTION_COLUMNS, REJECT_COLUMNS

OPTIONS = "a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5"


def _mathqa_row(problem: str, options: str = OPTIONS, correct: str = "b") -> dict:
    return {
        "Problem": problem,
        "Rationale": "because",
        "options": options,
        "correct": correct,
        "annotated_formula": "",
        "linear_formula": "",
        "category": "general",
    }


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_sample_sources_are_normalized_and_counted():
    params = {
        "sample_seed": 3,
        "sources": {
            "mmlu": {"task": "mmlu", "loader": "sample", "sample": {"train": 12, "test": 8}},
            "mathqa": {"task": "mathqa", "loader": "sample", "sample": {"train": 10, "test": 5}},
        },
    }
    questions, rejected, summary = ingest_sources(params)

    assert list(questions.columns) == QUESTION_COLUMNS
    assert list(rejected.columns) == REJECT_COLUMNS
    assert rejected.empty
    counts = summary["counts"]
    assert counts["mmlu"]["train"] == {"read": 12, "accepted": 12, "rejected": 0}
    assert counts["mathqa"]["test"] == {"read": 5, "accepted": 5, "rejected": 0}
    assert set(questions["split"]) == {"train", "test"}
    assert questions["row_id"].is_unique
    # Deterministic by seed.
    again, _, _ = ingest_sources(params)
    pd.testing.assert_frame_equal(questions, again)


def test_bad_rows_are_kept_with_reasons_and_counts_add_up(tmp_path):
    rows = [
        _mathqa_row("q one"),
        _mathqa_row("q two", options="a ) 1 , b ) 2 , c ) 3 , d ) 4"),  # an option short
        _mathqa_row("q three", correct="z"),
        _mathqa_row("q four", options="a ) 1,200 , b ) 2 , c ) 3 , d ) 4 , e ) 5"),
    ]
    params = {
        "sources": {
            "mq": {
                "task": "mathqa",
                "loader": "local",
                "local": {"train": _write_jsonl(tmp_path / "train.jsonl", rows)},
            }
        }
    }
    questions, rejected, summary = ingest_sources(params)

    assert summary["counts"]["mq"]["train"] == {"read": 4, "accepted": 2, "rejected": 2}
    assert len(questions) + len(rejected) == 4
    assert questions.loc[questions["question"] == "q four", "choices"].iloc[0][0] == "1,200"
    assert rejected["reason"].str.contains("options").any()
    assert rejected["reason"].str.contains("correct").any()
    assert set(summary["rejected_by_reason"]) == {"options", "correct"}


def test_train_rows_that_repeat_a_test_question_are_quarantined(tmp_path):
    train = [_mathqa_row("shared question"), _mathqa_row("only in train")]
    test = [_mathqa_row("shared question")]
    params = {
        "sources": {
            "mq": {
                "task": "mathqa",
                "loader": "local",
                "local": {
                    "train": _write_jsonl(tmp_path / "train.jsonl", train),
                    "test": _write_jsonl(tmp_path / "test.jsonl", test),
                },
            }
        }
    }
    questions, rejected, summary = ingest_sources(params)

    assert questions.loc[questions["split"] == "train", "question"].tolist() == ["only in train"]
    assert questions.loc[questions["split"] == "test", "question"].tolist() == ["shared question"]
    assert rejected["split"].tolist() == ["train"]
    assert "test split" in rejected["reason"].iloc[0]
    assert summary["counts"]["mq"]["train"] == {"read": 2, "accepted": 1, "rejected": 1}


def test_quarantine_prefers_test_over_validation():
    questions = pd.DataFrame(
        {
            "row_id": ["x", "x", "y"],
            "source": ["s"] * 3,
            "split": ["validation", "test", "train"],
            "question": ["q", "q", "r"],
            "choices": [["a"], ["a"], ["b"]],
            "answer": [0, 0, 0],
        }
    )
    kept, leaked = quarantine_leaked_rows(questions)
    assert kept["split"].tolist() == ["test", "train"]
    assert leaked["split"].tolist() == ["validation"]


def test_unknown_layout_names_the_columns_found(tmp_path):
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "p", "response": "r"}])
    params = {"sources": {"mq": {"task": "mathqa", "loader": "local", "local": {"train": path}}}}
    with pytest.raises(SourceLayoutError) as error:
        ingest_sources(params)
    message = str(error.value)
    assert "prompt" in message and "response" in message and "odd.jsonl" in message
