"""The report node, and the report pipeline run alone on versioned files (`--pipeline report`)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from gemma_pipeline.hooks import RunMetadataHook
from gemma_pipeline.pipelines.report import create_pipeline
from gemma_pipeline.pipelines.report.nodes import build_report

DATA = Path(__file__).resolve().parents[2] / "reporting" / "data"
SECRET = "hf-secret-value-42"


def _load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


PARAMS = {
    "report": {"title": "Tiny run", "significance_se": 2.0, "collapse_share": 0.5},
    "model": {"name_or_path": "google/gemma-2-2b-it", "hub": {"hf_token": SECRET}},
    "train_qlora": {"lora": {"r": 8}, "tokens": [SECRET]},
    "evaluate": {"split": "test", "batch_size": 8},
}


def test_build_report_renders_both_formats_and_redacts_params():
    md, html, figure = build_report(
        _load("heldout_metrics"),
        _load("benchmark_metrics"),
        pd.DataFrame({"reason": ["question: missing"] * 3}),
        _load("export_checks"),
        _load("train_metrics"),
        _load("ingest_summary"),
        {"git": {"commit": "abc", "dirty": False}},
        PARAMS["report"],
        PARAMS["model"],
        PARAMS["train_qlora"],
        PARAMS["evaluate"],
    )
    assert isinstance(figure, Figure)
    assert md.startswith("# Tiny run")
    assert "| mmlu | `letter_acc` | 25.0 ± 4.4 | 50.0 ± 5.0 | **+25.0 ± 6.0** |" in md
    # lm-eval-format benchmarks: both styles' meaning, the change, categories, pass-through.
    assert "| mmlu | 5-shot | plain | acc | 25.0 ± 4.3 | 55.0 ± 5.0 | **+30.0** | 100 |" in md
    assert "| gsm8k | 5-shot | plain | exact_match,flexible-extract | 5.0 ± 5.0 |" in md
    assert "| social_sciences | 32.5 ± 7.0 | 62.5 ± 8.0 | 40 |" in md
    assert "| arc_easy | acc,none | 0.310 | 0.350 |" in md
    assert "Benchmark rows rejected at ingest: 3." in md
    assert "style chat is the chat-template format the fine-tune was trained on" in md
    # The exports and their checks, from export_checks.json.
    assert "## Exports" in md
    assert "| GGUF q8_0 |" in md
    assert "32/32 tokens identical" in md
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2  # per-subject plot and loss curve
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    for text in (md, html):
        assert SECRET not in text
        assert "hf_token: &#x27;***&#x27;" in text or "hf_token: '***'" in text
        assert "batch_size: 8" in text


def _json(path: Path) -> dict:
    return {"type": "json.JSONDataset", "filepath": str(path), "versioned": True}


@pytest.fixture
def versioned_catalog(tmp_path) -> DataCatalog:
    """The report's inputs as versioned JSON files, its outputs as versioned text/png files."""
    reporting = tmp_path / "08_reporting"
    config = {
        "heldout_metrics": _json(reporting / "heldout_metrics.json"),
        "benchmark_metrics": _json(reporting / "benchmark_metrics.json"),
        "benchmark_rejected_rows": {
            "type": "pandas.ParquetDataset",
            "filepath": str(tmp_path / "02_intermediate" / "benchmark_rejected_rows.parquet"),
            "versioned": True,
        },
        "export_checks": _json(reporting / "export_checks.json"),
        "train_metrics": _json(reporting / "train_metrics.json"),
        "ingest_summary": _json(reporting / "ingest_summary.json"),
        "adapter": _json(tmp_path / "06_models" / "adapter.json"),  # never saved
        # Its name contains "token": a dataset name, not a credential, so never redacted.
        "tokenized": _json(tmp_path / "04_feature" / "tokenized.json"),
        "report_md": {
            "type": "text.TextDataset",
            "filepath": str(reporting / "report.md"),
            "versioned": True,
        },
        "report_html": {
            "type": "text.TextDataset",
            "filepath": str(reporting / "report.html"),
            "versioned": True,
        },
        "per_subject_plot": {
            "type": "matplotlib.MatplotlibDataset",
            "filepath": str(reporting / "per_subject.png"),
            "versioned": True,
        },
    }
    earlier = DataCatalog.from_config(config, save_version="2026-01-01T00.00.00.000Z")
    for name in (
        "heldout_metrics",
        "benchmark_metrics",
        "export_checks",
        "train_metrics",
        "ingest_summary",
    ):
        earlier.save(name, _load(name))
    earlier.save("benchmark_rejected_rows", pd.DataFrame({"reason": ["answer: missing"]}))
    return DataCatalog.from_config(config, save_version="2026-02-02T00.00.00.000Z")


def test_report_pipeline_runs_alone_with_hook_metadata(versioned_catalog, tmp_path):
    catalog = versioned_catalog
    for section, values in PARAMS.items():
        catalog[f"params:{section}"] = values
    hook = RunMetadataHook()
    hook.after_catalog_created(catalog, "2026-02-02T00.00.00.000Z", {})
    pipeline = create_pipeline()
    hook.before_pipeline_run(
        {"run_id": "2026-02-02T00.00.00.000Z", "pipeline_names": ["report"]}, pipeline, catalog
    )

    SequentialRunner().run(pipeline, catalog)

    metadata = catalog.load("run_metadata")
    assert metadata["dataset_versions"]["heldout_metrics"] == "2026-01-01T00.00.00.000Z"
    assert metadata["dataset_versions"]["adapter"] is None
    assert metadata["written_this_run"] == ["per_subject_plot", "report_html", "report_md"]
    assert metadata["session_id"] == "2026-02-02T00.00.00.000Z"
    md = (tmp_path / "08_reporting/report.md/2026-02-02T00.00.00.000Z/report.md").read_text()
    assert "| heldout_metrics | 2026-01-01T00.00.00.000Z | latest at run start |" in md
    assert "| adapter | — | nothing saved yet |" in md
    assert "| tokenized | — | nothing saved yet |" in md
    assert "| report_md | 2026-02-02T00.00.00.000Z | written by this run |" in md
    assert (tmp_path / "08_reporting/report.html/2026-02-02T00.00.00.000Z/report.html").is_file()
    png = tmp_path / "08_reporting/per_subject.png/2026-02-02T00.00.00.000Z/per_subject.png"
    assert png.read_bytes().startswith(b"\x89PNG")
