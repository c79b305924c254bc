"""lm-evaluation-harness itself, on our model object, offline.

Two uses: any lm-eval task by name (``evaluate.lm_eval_tasks``), folded into the metrics; and
the fidelity check, which runs lm-eval's own ``mmlu_*`` / ``mathqa`` / ``gsm8k`` on the same
rows as the project. Its tasks normally download their data from the Hub; here each task's
registered config is kept and only its dataset is pointed at local files.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from gemma_pipeline.config import LmEvalTask

logger = logging.getLogger(__name__)


@cache  # indexing lm-eval's thousands of task files takes seconds
def _task_manager():
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as error:  # an optional dependency: say how to get it
        raise ImportError(
            "lm-evaluation-harness is not installed: pip install -e '.[lm-eval]'"
        ) from error
    return TaskManager()


def task_config(name: str, data_files: Mapping[str, str] | None = None, **overrides: Any) -> dict:
    """lm-eval's registered config of task ``name``; with ``data_files``, read from local JSON.

    ``data_files`` maps the task's split names (e.g. ``test``, ``dev``, ``train``) to files in
    the task's own schema (the Hub dataset's columns).
    """
    manager = _task_manager()
    entry = manager.task_index.get(name)
    if entry is None:
        raise KeyError(f"lm-eval has no task named {name!r}")
    changes: dict[str, Any] = dict(overrides)
    if data_files is not None:
        changes |= {
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": dict(data_files)},
        }
    config = manager._factory._load_full_config(entry, changes)
    if data_files is not None:
        # A split the files do not provide is absent, not an error: lm-eval then takes few-shot
        # examples from the splits that are there.
        for key in ("training_split", "validation_split", "fewshot_split"):
            if config.get(key) not in data_files:
                config[key] = None
    config.pop("metadata", None)
    for structural in ("tag", "group", "task_list"):
        config.pop(structural, None)
    return config


def run_tasks(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str | dict],
    *,
    batch_size: int | str = 8,
    limit: int | None = None,
    num_fewshot: int | None = None,
    log_samples: bool = False,
) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` with lm-eval's HF backend wrapped around ``model``."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    manager = _task_manager()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    return simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        log_samples=log_samples,
        bootstrap_iters=0,  # standard errors of means need no bootstrap
    )


def fold_results(results: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """lm-eval's ``results`` section as {task: {"metric,filter": {value, stderr}}}."""
    folded: dict[str, dict[str, dict[str, float | None]]] = {}
    for task, values in results.get("results", {}).items():
        metrics = {}
        for key, value in values.items():
            # Metric keys read "metric,filter"; alias and sample_len are not metrics.
            if "," not in key or "_stderr," in key or not isinstance(value, int | float):
                continue
            metric, _, filter_name = key.partition(",")
            stderr = values.get(f"{metric}_stderr,{filter_name}")
            metrics[key] = {
                "value": float(value),
                "stderr": float(stderr)
                if isinstance(stderr, int | float) and not math.isnan(stderr)
                else None,
            }
        folded[task] = metrics
    return folded


def run_lm_eval_tasks(
    model: Any, tokenizer: Any, specs: Sequence[LmEvalTask], *, batch_size: int
) -> dict[str, dict[str, Any]]:
    """Each configured task run by lm-eval itself: {task: {num_fewshot, metrics}}."""
    outcome: dict[str, dict[str, Any]] = {}
    for spec in specs:
        config = task_config(spec.task, spec.data_files)
        results = run_tasks(
            model, tokenizer, [config], batch_size=batch_size, num_fewshot=spec.num_fewshot
        )
        for task, metrics in fold_results(results).items():
            outcome[task] = {"num_fewshot": spec.num_fewshot, "metrics": metrics}
    return outcome
