"""The report's figures render to PNG."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import matplotlib.pyplot as plt

from gemma_pipeline.reporting.plots import plot_loss_curve, plot_per_subject, png_base64

DATA = Path(__file__).parent / "data"


def _load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def test_per_subject_plot_has_a_panel_per_task():
    figure = plot_per_subject(_load("heldout_metrics"))
    assert len(figure.axes) == 2  # one panel per task
    assert figure.axes[1].get_yticklabels()[0].get_text() == "geography (n=60)"
    encoded = png_base64(figure, close=True)
    assert base64.b64decode(encoded).startswith(b"\x89PNG")
    empty = plot_per_subject({"tasks": {}})
    assert empty.axes[0].texts
    plt.close(empty)


def test_loss_curve_renders_to_png():
    encoded = png_base64(plot_loss_curve(_load("train_metrics")["log_history"]), close=True)
    assert base64.b64decode(encoded).startswith(b"\x89PNG")
