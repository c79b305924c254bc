"""The `results` pipeline: metrics and the report recomputed from stored predictions, no model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from gemma_pipeline.config import IngestParams
from gemma_pipeline.evaluation.benchmarks import score_benchmark, summarize_benchmarks
from gemma_pipeline.evaluation.heldout import score_heldout, summarize_heldout
from gemma_pipeline.modeling import load_causal_lm
from gemma_pipeline.pipeline_registry import register_pipelines
from gemma_pipeline.sources.ingest import read_benchmarks

ROOT = Path(__file__).resolve().parents[3]
HELDOUT = ROOT / "tests" / "evaluation" / "data" / "heldout_scores_2462dcc.json"
REPORTING = ROOT / "tests" / "reporting" / "data"
EARLIER = "2026-01-01T00.00.00.000Z"


@pytest.fixture(scope="module")
def predictions(tiny_model_dir, tiny_tokenizer):
    """What the evaluate pipeline's scoring nodes store, made by the same scoring functions."""
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32").eval()
    questions = pd.DataFrame(
        [entry["question"] for entry in json.loads(HELDOUT.read_text())["questions"]]
    )
    provenance = {"base_model": str(tiny_model_dir), "adapter": "data/06_models/adapter/x"}
    heldout = pd.concat(
        [
            score_heldout(model, tiny_tokenizer, questions, max_batch_tokens=512).assign(model=m)
            for m in ("base", "finetuned")
        ],
        ignore_index=True,
    ).assign(split="test", **provenance)
    sources = {"mmlu": {"task": "mmlu", "loader": "sample", "sample": {"test": 5}}}
    rows, _, _ = read_benchmarks(
        IngestParams.model_validate({"sources": {}, "benchmarks": sources})
    )
    scores = score_benchmark(model, tiny_tokenizer, rows, "mmlu", 0, "plain")
    benchmark = pd.concat(
        [
            scores.assign(model=m, task="mmlu", shots=0, style="plain")
            for m in ("base", "finetuned")
        ],
        ignore_index=True,
    ).assign(**provenance)
    return heldout, benchmark


def _project_catalog(tmp_path: Path) -> dict:
    """conf/base/catalog.yml with every file under tmp_path."""
    config = yaml.safe_load((ROOT / "conf" / "base" / "catalog.yml").read_text())
    for entry in config.values():
        entry["filepath"] = str(tmp_path / entry["filepath"])
    return config


def test_results_pipeline_needs_no_model_and_recomputes_the_metrics(tmp_path, predictions):
    results = register_pipelines()["results"]
    inputs = {name for name in results.inputs() if not name.startswith("params:")}
    assert inputs == {
        "heldout_predictions",
        "benchmark_predictions",
        "lm_eval_results",
        "benchmark_rejected_rows",
        "export_checks",
        "train_metrics",
        "ingest_summary",
        "run_metadata",
    }
    assert {node.name for node in results.nodes} == {
        "summarize_heldout",
        "summarize_benchmarks",
        "build_report",
    }

    heldout, benchmark = predictions
    config = _project_catalog(tmp_path)
    earlier = DataCatalog.from_config(config, save_version=EARLIER)
    earlier.save("heldout_predictions", heldout)
    earlier.save("benchmark_predictions", benchmark)
    earlier.save("lm_eval_results", {"models": {}})
    earlier.save("benchmark_rejected_rows", pd.DataFrame({"reason": ["answer: missing"]}))
    for name in ("export_checks", "train_metrics", "ingest_summary"):
        earlier.save(name, json.loads((REPORTING / f"{name}.json").read_text()))

    catalog = DataCatalog.from_config(config, save_version="2026-02-02T00.00.00.000Z")
    catalog["run_metadata"] = {}
    for section in ("report", "model", "train_qlora", "evaluate"):
        catalog[f"params:{section}"] = {}
    SequentialRunner().run(results, catalog)

    stored = catalog.load("heldout_metrics")
    assert stored == json.loads(json.dumps(summarize_heldout(heldout)))
    records = catalog.load("benchmark_metrics")["records"]
    assert (
        records
        == json.loads(json.dumps(summarize_benchmarks(benchmark, {"models": {}})))["records"]
    )
    assert catalog.load("report_md").startswith("# Gemma QLoRA fine-tune")
    assert "| mmlu | 0-shot | plain | acc |" in catalog.load("report_md")
