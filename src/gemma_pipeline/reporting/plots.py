"""Plots people compare runs by."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI, servers, kedro runs
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter


def plot_loss_curve(log_history: list[dict[str, Any]]) -> Figure:
    """Training loss (and learning rate) against optimizer step."""
    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    rates = [
        (entry["step"], entry["learning_rate"]) for entry in log_history if "learning_rate" in entry
    ]
    figure, axis = plt.subplots(figsize=(7, 4))
    if points:
        steps, losses = zip(*points, strict=True)
        axis.plot(steps, losses, marker="o", markersize=3, label="train loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    if rates:
        twin = axis.twinx()
        steps, values = zip(*rates, strict=True)
        twin.plot(steps, values, color="tab:gray", alpha=0.5, label="learning rate")
        twin.set_ylabel("learning rate")
    axis.set_title("Training loss")
    figure.tight_layout()
    return figure


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def plot_per_subject(heldout_metrics: Mapping[str, Any]) -> Figure:
    """Letter accuracy per subject, base vs fine-tuned with ±1 SE bars, one panel per task.

    Horizontal bars, because MMLU has 57 subjects and their names are long; panel heights follow
    the number of subjects so every bar has the same thickness.
    """
    tasks = [
        (task, result.get("per_subject") or [])
        for task, result in sorted((heldout_metrics.get("tasks") or {}).items())
        if isinstance(result, Mapping)
    ]
    tasks = [(task, rows) for task, rows in tasks if rows]
    if not tasks:
        figure, axis = plt.subplots(figsize=(7, 1.5))
        axis.text(0.5, 0.5, "no per-subject results", ha="center", va="center")
        axis.axis("off")
        return figure

    counts = [len(rows) for _, rows in tasks]
    figure, axes = plt.subplots(
        len(tasks),
        1,
        figsize=(8, 1.0 + 0.28 * sum(counts) + 0.9 * len(tasks)),
        height_ratios=counts,
        squeeze=False,
        layout="constrained",
    )
    width = 0.4
    for axis, (task, rows) in zip(axes[:, 0], tasks, strict=True):
        positions = np.arange(len(rows))
        for offset, key, label in (
            (-width / 2, "base", "base"),
            (width / 2, "finetuned", "fine-tuned"),
        ):
            axis.barh(
                positions + offset,
                [_or_nan(row.get(key)) for row in rows],
                height=width,
                xerr=[0.0 if row.get(f"{key}_se") is None else row[f"{key}_se"] for row in rows],
                capsize=2,
                label=label,
            )
        axis.set_yticks(positions, [f"{row.get('subject')} (n={row.get('n')})" for row in rows])
        axis.invert_yaxis()  # first subject on top, as in the table
        axis.set_xlim(0, 1)
        axis.xaxis.set_major_formatter(PercentFormatter(1.0))
        axis.grid(axis="x", alpha=0.3)
        axis.set_title(f"{task}: letter accuracy by subject (±1 SE)")
    # Outside the panels: inside, it would hide the bars of whichever subject sits under it.
    figure.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper right", ncols=2)
    axes[-1, 0].set_xlabel("letter accuracy")
    return figure


def png_base64(figure: Figure, *, close: bool = False) -> str:
    """The figure as a base64 PNG, for an ``<img src="data:image/png;base64,...">``.

    ``close`` frees a figure nobody else will save (pyplot keeps every open figure alive).
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    if close:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
