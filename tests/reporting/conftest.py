"""The hand-written run artifacts in ``data/``, and the run metadata and configuration a report
shows, shared by the tests of each group of report sections and of the whole report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def heldout_metrics() -> dict[str, Any]:
    return _load("heldout_metrics")


@pytest.fixture
def benchmark_metrics() -> dict[str, Any]:
    # Function-scoped: tests change it to make malformed or extra records.
    return _load("benchmark_metrics")


@pytest.fixture(scope="module")
def train_metrics() -> dict[str, Any]:
    return _load("train_metrics")


@pytest.fixture(scope="module")
def ingest_summary() -> dict[str, Any]:
    return _load("ingest_summary")


@pytest.fixture(scope="module")
def run_metadata() -> dict[str, Any]:
    return {
        "session_id": "2026-01-02T03.04.05.678Z",
        "save_version": "2026-01-02T03.04.05.678Z",
        "env": "demo",
        "load_versions": {"adapter": "2025-12-31T00.00.00.000Z"},
        "dataset_versions": {
            "adapter": "2025-12-31T00.00.00.000Z",
            "heldout_metrics": None,
            "questions": "2025-12-30T00.00.00.000Z",
        },
        "written_this_run": ["heldout_metrics"],
        "git": {"commit": "0123abcd", "dirty": True},
        "python": "3.11.7",
        "packages": {"torch": "2.6.0", "bitsandbytes": None},
    }


@pytest.fixture(scope="module")
def run_config() -> dict[str, Any]:
    return {"model": {"name_or_path": "google/gemma-2-2b-it"}, "evaluate": {"split": "test"}}


@pytest.fixture
def export_checks() -> dict[str, Any]:
    # Recorded by check_exports on a tiny Gemma-2 export; function-scoped: tests break it.
    return _load("export_checks")
