"""The same rows for lm-evaluation-harness and for the project: raw sample files on disk.

lm-eval reads them through its registered task configs (dataset pointed at the files); the
project ingests them with ``ingest_benchmarks`` (loader: local). Shared by the CI prompt test
and the slow accuracy comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gemma_pipeline.evaluation.lm_eval_bridge import task_config
from gemma_pipeline.pipelines.ingest.nodes import ingest_benchmarks
from gemma_pipeline.sources import generate_gsm8k_raw, generate_mathqa_raw, generate_mmlu_raw


def _write(frame: pd.DataFrame, path: Path) -> str:
    with path.open("w", encoding="utf-8") as handle:
        for record in frame.to_dict(orient="records"):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return str(path)


def write_benchmark_files(folder: Path, sizes: dict[str, int], seed: int = 0) -> dict:
    """Raw files per task and split, plus each task's lm-eval configs reading them."""
    mmlu_test = generate_mmlu_raw("test", sizes["mmlu"], seed)
    mmlu_dev = generate_mmlu_raw("validation", 100, seed)
    files = {
        "mmlu": {
            "test": _write(mmlu_test, folder / "mmlu_test.jsonl"),
            "fewshot": _write(mmlu_dev, folder / "mmlu_dev.jsonl"),
        },
        "mathqa": {
            "test": _write(generate_mathqa_raw("test", sizes["mathqa"], seed), folder / "mq.jsonl")
        },
        "gsm8k": {
            "test": _write(generate_gsm8k_raw("test", sizes["gsm8k"], seed), folder / "g_t.jsonl"),
            "fewshot": _write(generate_gsm8k_raw("train", 60, seed), folder / "g_tr.jsonl"),
        },
    }
    configs: dict[str, list[dict]] = {"mmlu": [], "mathqa": [], "gsm8k": []}
    for subject in dict.fromkeys(mmlu_test["subject"]):  # lm-eval: one task per subject
        test = _write(mmlu_test[mmlu_test["subject"] == subject], folder / f"t_{subject}.jsonl")
        dev = _write(mmlu_dev[mmlu_dev["subject"] == subject], folder / f"d_{subject}.jsonl")
        configs["mmlu"].append(task_config(f"mmlu_{subject}", {"test": test, "dev": dev}))
    configs["mathqa"].append(
        task_config(
            "mathqa",
            {"test": files["mathqa"]["test"]},
            training_split=None,
            validation_split=None,
        )
    )
    configs["gsm8k"].append(
        task_config("gsm8k", {"test": files["gsm8k"]["test"], "train": files["gsm8k"]["fewshot"]})
    )
    return {"files": files, "configs": configs}


def ingest_same_rows(files: dict) -> pd.DataFrame:
    sources = {
        task: {"task": task, "loader": "local", "local": splits} for task, splits in files.items()
    }
    questions, rejected = ingest_benchmarks({"sources": {}, "benchmarks": sources})
    assert rejected.empty, rejected
    return questions
