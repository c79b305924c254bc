import json

import pandas as pd
import pytest

from gemma_pipeline.pipelines.ingest.nodes import ingest_sources
from gemma_pipeline.sources import SourceLayoutError, make_row_id, normalize, parse_options
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
    requested = {name: source["sample"] for name, source in params["sources"].items()}
    assert summary["counts"] == {
        name: {split: {"read": n, "accepted": n, "rejected": 0} for split, n in sizes.items()}
        for name, sizes in requested.items()
    }
    assert summary["rejected_by_reason"] == {}
    assert questions.groupby(["source", "split"]).size().to_dict() == {
        (name, split): n for name, sizes in requested.items() for split, n in sizes.items()
    }
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
    assert questions["question"].tolist() == ["q one", "q four"]
    choices = questions.set_index("question")["choices"]
    assert choices["q four"] == parse_options(rows[3]["options"]) == ["1,200", "2", "3", "4", "5"]
    # The reasons are the normalizer's own, row for row.
    _, expected = normalize("mathqa", pd.DataFrame(rows), source="mq", split="train", origin="f")
    assert rejected["reason"].tolist() == expected["reason"].tolist()
    assert rejected["reason"].str.split(":").str[0].tolist() == ["options", "correct"]
    assert summary["rejected_by_reason"] == {"options": 1, "correct": 1}


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
    row_id = make_row_id("mq", "shared question", parse_options(OPTIONS))
    assert rejected[["split", "row_id"]].values.tolist() == [["train", row_id]]
    assert rejected["reason"].tolist() == [f"question: same content as {row_id} in the test split"]
    assert summary["counts"]["mq"]["train"] == {"read": 2, "accepted": 1, "rejected": 1}


def test_unknown_layout_names_the_columns_found(tmp_path):
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "p", "response": "r"}])
    params = {"sources": {"mq": {"task": "mathqa", "loader": "local", "local": {"train": path}}}}
    with pytest.raises(SourceLayoutError) as error:
        ingest_sources(params)
    message = str(error.value)
    assert "prompt" in message and "response" in message and "odd.jsonl" in message
