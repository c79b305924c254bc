"""Reading sources as the ingest pipeline does (``sources/ingest.py``)."""

import pandas as pd

from gemma_pipeline.config import IngestParams
from gemma_pipeline.sources.ingest import quarantine_leaked_rows, read_benchmarks
from gemma_pipeline.sources.schema import QUESTION_COLUMNS, REJECT_COLUMNS


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


def test_benchmarks_keep_duplicates_and_source_order_and_count_every_row():
    sources = {
        "gsm8k": {"task": "gsm8k", "loader": "sample", "sample": {"test": 4, "fewshot": 6}},
        "mathqa": {"task": "mathqa", "loader": "sample", "sample": {"test": 3}},
    }
    params = IngestParams.model_validate({"sources": {}, "benchmarks": sources})
    questions, rejected, counts = read_benchmarks(params)
    assert counts == {
        "gsm8k": {
            "test": {"read": 4, "accepted": 4, "rejected": 0},
            "fewshot": {"read": 6, "accepted": 6, "rejected": 0},
        },
        "mathqa": {"test": {"read": 3, "accepted": 3, "rejected": 0}},
    }
    assert rejected.empty
    assert questions.groupby(["source", "split"], sort=False).size().to_dict() == {
        ("gsm8k", "test"): 4,
        ("gsm8k", "fewshot"): 6,
        ("mathqa", "test"): 3,
    }


def test_no_benchmarks_gives_empty_frames_in_the_schema():
    questions, rejected, counts = read_benchmarks(IngestParams(sources={}))
    assert questions.empty and rejected.empty and counts == {}
    assert list(questions.columns) == QUESTION_COLUMNS
    assert list(rejected.columns) == REJECT_COLUMNS
