"""`kedro viz build` (the lineage view) works offline on the project as checked out."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("kedro") is None, reason="kedro CLI not installed")
def test_kedro_viz_build_offline(tmp_path):
    # A copy: viz writes build/ and .viz/ into the project it runs in.
    for name in ("conf", "src", "pyproject.toml", ".telemetry"):
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("local"))
        else:
            shutil.copy(source, tmp_path / name)
    (tmp_path / "conf" / "local").mkdir()
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = str(tmp_path / "src")
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    main_js = (tmp_path / "build" / "api" / "main").read_text()
    for node in ("ingest_sources", "train_qlora", "score_heldout", "summarize_heldout"):
        assert node in main_js
