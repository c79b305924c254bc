"""One run's evaluation, found from its adapter: the held-out metrics and predictions that scored
it, the questions of its evaluation split, and the report's per-subject plot.

An adapter is evaluated in the run that trained it, or later by `kedro run --pipeline
evaluation --load-versions adapter:<ts>`; either way the predictions name the adapter's folder,
so the newest evaluation of *this* adapter is found by that, not by the newest timestamp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import UserInputError
from .project import Project


@dataclass(frozen=True)
class RunResults:
    version: str  # the evaluation's version (its run's timestamp)
    metrics: dict[str, Any]  # heldout_metrics
    predictions: pd.DataFrame  # heldout_predictions: one row per question and model
    questions: pd.DataFrame  # the evaluated questions (row_id, task, subject, question, ...)
    per_subject_plot: Path | None

    @property
    def split(self) -> str:
        return self.metrics["split"]


def _version_file(project: Project, name: str, version: str) -> Path | None:
    folder = project.filepath(name)
    path = folder / version / folder.name
    return path if path.is_file() else None


def find_run_results(project: Project, adapter_path: str | Path) -> RunResults:
    """The newest evaluation of the adapter at ``adapter_path``."""
    adapter = Path(adapter_path).resolve()
    for version in reversed(project.versions("heldout_metrics")):
        path = _version_file(project, "heldout_metrics", version)
        if path is None:
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if Path(str(metrics.get("adapter", ""))).resolve() != adapter:
            continue
        predictions_file = _version_file(project, "heldout_predictions", version)
        if predictions_file is None:
            continue
        predictions = pd.read_parquet(predictions_file)
        return RunResults(
            version=version,
            metrics=metrics,
            predictions=predictions,
            questions=_evaluated_questions(project, predictions, version),
            per_subject_plot=_version_file(project, "per_subject_plot", version),
        )
    raise UserInputError(
        f"No held-out evaluation of the adapter {adapter} in "
        f"{project.filepath('heldout_metrics')}: run `kedro run --pipeline evaluation "
        f"--load-versions adapter:{adapter.parent.name}`"
    )


def _evaluated_questions(project: Project, predictions: pd.DataFrame, version: str) -> pd.DataFrame:
    """The rows of ``questions`` that were scored: from the evaluation's own run when it ingested
    them, else the newest version that holds them all."""
    wanted = set(predictions["row_id"])
    versions = project.versions("questions")
    ordered = ([version] if version in versions else []) + list(reversed(versions))
    for candidate in ordered:
        path = _version_file(project, "questions", candidate)
        if path is None:
            continue
        questions = pd.read_parquet(path)
        found = questions[questions["row_id"].isin(wanted)]
        if set(found["row_id"]) == wanted:
            return found.reset_index(drop=True)
    raise UserInputError(
        f"No version of `questions` holds the {len(wanted)} questions evaluation {version} scored"
    )


def stored_choice(results: RunResults, row_id: str, model: str) -> str | None:
    """The letter ``evaluate`` chose for this question and model (``base`` / ``finetuned``)."""
    rows = results.predictions
    match = rows[(rows["row_id"] == row_id) & (rows["model"] == model)]
    return None if match.empty else str(match.iloc[0]["letter_pred"])
