"""Plots people compare runs by."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI, servers, kedro runs
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def plot_loss_curve(log_history: list[dict[str, Any]]) -> Figure:
    """Training loss (and learning rate) against optimizer step."""
    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    rates = [
        (entry["step"], entry["learning_rate"])
        for entry in log_history
        if "learning_rate" in entry
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
