"""notebooks/explore_run.ipynb, executed (nbclient) on the artifacts of a tiny pipeline run."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import nbformat
import pandas as pd
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "explore_run.ipynb"


def _latest(folder: Path) -> Path:
    version = sorted(p for p in folder.iterdir() if p.is_dir())[-1]
    return version / folder.name


def test_the_notebook_runs_on_a_run_and_lists_what_the_fine_tune_changed(tiny_run):
    notebooks = tiny_run / "notebooks"
    notebooks.mkdir(exist_ok=True)
    shutil.copy(NOTEBOOK, notebooks / NOTEBOOK.name)
    notebook = nbformat.read(notebooks / NOTEBOOK.name, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebooks)}},
    ).execute()  # raises CellExecutionError on any failing cell

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    predictions = pd.read_parquet(
        _latest(tiny_run / "data/07_model_output/heldout_predictions.parquet")
    )
    wide = predictions.pivot_table(index="row_id", columns="model", values="letter_correct")
    right = int(((wide["base"] == 0) & (wide["finetuned"] == 1)).sum())
    wrong = int(((wide["base"] == 1) & (wide["finetuned"] == 0)).sum())
    assert f"newly right: {right} · newly wrong: {wrong} · of {len(wide)}" in text
    images = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the per-subject plot
    assert base64.b64decode(images[0]).startswith(b"\x89PNG")
    tables = [o.data.get("text/html", "") for o in outputs if o.output_type == "execute_result"]
    assert any("letter_acc" in html for html in tables)  # the results table
