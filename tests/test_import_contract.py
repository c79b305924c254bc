"""The package's layers point down: the import contract in pyproject.toml holds, and breaks."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    return subprocess.run(
        [sys.executable, *_lint_imports_main(), "--no-cache"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _lint_imports_main() -> list[str]:
    # importlinter has no `python -m importlinter` entry point of its own.
    return ["-c", "import sys; from importlinter.cli import lint_imports_command as c; c()"]


def test_the_package_keeps_its_layers():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Layers point down KEPT" in result.stdout


def test_an_import_that_points_up_breaks_the_contract(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    # evaluation reaching into training: the kind of import the contract exists to stop.
    base = tmp_path / "src" / "gemma_pipeline" / "evaluation" / "model.py"
    base.write_text(base.read_text() + "\nfrom gemma_pipeline.training import recipe  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "Layers point down BROKEN" in result.stdout
    assert "gemma_pipeline.evaluation.model -> gemma_pipeline.training.recipe" in result.stdout
