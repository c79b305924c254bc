"""Weights & Biases: which mode a run logs in, what it logs, and the run itself.

Pure helpers (the API key and mode, the run's JSON artifacts flattened to W&B scalars) and a
thin wrapper around a W&B run that turns every tracking failure into a warning: tracking
observes a run, it must never be the reason one fails. Credentials are cut out with
:mod:`gemma_pipeline.redaction`; what the run starts from comes from
:mod:`gemma_pipeline.provenance`, through the hook.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from gemma_pipeline.redaction import redact, scrub

logger = logging.getLogger(__name__)

Mode = Literal["online", "offline", "disabled"]

# WANDB_MODE values wandb itself accepts, plus our `auto`.
_ENV_MODES: dict[str, Mode | Literal["auto"]] = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
    "auto": "auto",
}


# --- API key and mode -------------------------------------------------------------------------


def api_key_from(credentials: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The W&B API key: ``credentials.yml``'s ``wandb.api_key``, else ``WANDB_API_KEY``.

    The project's credentials file wins over a machine-wide environment variable.
    """
    section = credentials.get("wandb") if isinstance(credentials, Mapping) else None
    key = section.get("api_key") if isinstance(section, Mapping) else None
    if isinstance(key, str) and key.strip():
        return key.strip()
    key = environ.get("WANDB_API_KEY", "").strip()
    return key or None


def resolve_mode(param_mode: str, env_mode: str | None, has_api_key: bool) -> Mode:
    """The W&B mode of this run.

    ``WANDB_MODE`` wins over the ``tracking.mode`` parameter (so a CI job or a test can switch
    tracking off without editing conf); ``auto`` is online when an API key is configured and
    offline otherwise, so a machine without an account still records the run locally.
    """
    if env_mode is not None and env_mode.strip():
        mode = _ENV_MODES.get(env_mode.strip().lower())
        if mode is None:
            raise ValueError(
                f"WANDB_MODE={env_mode!r} is not one of {', '.join(sorted(_ENV_MODES))}"
            )
    elif param_mode in ("online", "offline", "disabled", "auto"):
        mode = param_mode
    else:
        raise ValueError(f"tracking.mode={param_mode!r} is not online|offline|disabled|auto")
    if mode == "auto":
        return "online" if has_api_key else "offline"
    return mode


# --- what is logged ---------------------------------------------------------------------------


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def flatten_heldout_metrics(heldout_metrics: Mapping[str, Any]) -> dict[str, float]:
    """``heldout_metrics.json`` as flat scalars: ``heldout/<task>/<metric>/<field>``.

    ``<field>`` is ``base``, ``finetuned`` or ``change``, each with a ``_se`` twin; beside them
    ``heldout/<task>/n`` and ``heldout/<task>/letter_spread/<model>/<max_share|entropy>``.
    Only the per-task results are flattened; other top-level keys are left out rather than
    guessed at. Nulls are skipped: W&B has no null scalar.
    """
    flat: dict[str, float] = {}
    tasks = heldout_metrics.get("tasks")
    if not isinstance(tasks, Mapping):
        return flat
    for task, result in tasks.items():
        if not isinstance(result, Mapping):
            continue
        if _finite_number(result.get("n")):
            flat[f"heldout/{task}/n"] = float(result["n"])
        for row in result.get("metrics") or []:
            for field in ("base", "base_se", "finetuned", "finetuned_se", "change", "change_se"):
                value = row.get(field)
                if _finite_number(value):
                    flat[f"heldout/{task}/{row.get('metric')}/{field}"] = float(value)
        for model, spread in (result.get("letter_spread") or {}).items():
            for field in ("max_share", "entropy"):
                value = (spread or {}).get(field)
                if _finite_number(value):
                    flat[f"heldout/{task}/letter_spread/{model}/{field}"] = float(value)
    return flat


def flatten_benchmark_metrics(benchmark_metrics: Mapping[str, Any]) -> dict[str, float]:
    """``benchmark_metrics.json``'s records as flat scalars, a value and its stderr per record.

    A task-level record (level ``task``, no group) is
    ``benchmark/<task>/<shots>-shot/<style>/<metric>/<model>``; a record of one group (level
    ``category`` or ``subject``) puts ``/<level>/<group>`` before the model:
    ``benchmark/mmlu/0-shot/plain/acc/category/stem/finetuned``. Its stderr is the same key
    with ``_stderr`` appended. The model is last, so base and fine-tuned sit side by side in
    W&B, and a group key has two segments more than a task key, so neither can be read as the
    other. Shots null (an lm-eval task at its own default) is written ``default-shot``.
    Null values and stderrs are skipped, as W&B has no null scalar; ``n`` is left to the report.

    A record that would give an ambiguous key (a name with ``/``, a group at level ``task``, the
    same key twice) or a value that is not a number raises ``ValueError`` naming the record.
    """
    records = benchmark_metrics.get("records")
    if not isinstance(records, list):
        raise ValueError(
            "benchmark_metrics has no 'records' list (is it the old 'task|shots|style' layout?)"
        )
    flat: dict[str, float] = {}
    key_of_record: dict[str, int] = {}
    for index, record in enumerate(records):
        where = f"benchmark_metrics records[{index}]"
        if not isinstance(record, Mapping):
            raise ValueError(f"{where} is a {type(record).__name__}, not a mapping")
        key = "/".join(["benchmark", *_benchmark_key_segments(record, where)])
        if key in key_of_record:
            raise ValueError(
                f"{where} has the same W&B key as records[{key_of_record[key]}]: {key}"
            )
        key_of_record[key] = index
        for field, suffix in (("value", ""), ("stderr", "_stderr")):
            value = record.get(field)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"{where}.{field}={value!r} is not a number or null")
            if math.isfinite(value):
                flat[key + suffix] = float(value)
    return flat


def _benchmark_key_segments(record: Mapping[str, Any], where: str) -> list[str]:
    def name(field: str) -> str:
        if field not in record:
            raise ValueError(f"{where} has no {field!r}")
        value = record[field]
        if not isinstance(value, str) or not value or "/" in value:
            raise ValueError(
                f"{where}.{field}={value!r} is not a name W&B can key on "
                "(a non-empty string without '/')"
            )
        return value

    if "shots" not in record:
        raise ValueError(f"{where} has no 'shots'")
    shots = record["shots"]
    if shots is None:
        shots_segment = "default-shot"
    elif isinstance(shots, int) and not isinstance(shots, bool) and shots >= 0:
        shots_segment = f"{shots}-shot"
    else:
        raise ValueError(f"{where}.shots={shots!r} is not a count of shots or null")
    segments = [name("task"), shots_segment, name("style"), name("metric")]
    level = name("level")
    if level == "task":
        if record.get("group") is not None:
            raise ValueError(
                f"{where}.group={record['group']!r} at level 'task': only a record of a "
                "category or subject has a group"
            )
    else:
        segments += [level, name("group")]
    return [*segments, name("model")]


def train_summary(train_metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar totals of ``train_metrics.json`` (rows, steps, final loss, time, size)."""
    keys = (
        "train_rows",
        "global_steps",
        "final_train_loss",
        "wall_seconds",
        "trainable_parameters",
    )
    return {
        f"train/{key}": float(train_metrics[key])
        for key in keys
        if _finite_number(train_metrics.get(key))
    }


# --- the W&B run ------------------------------------------------------------------------------


class WandbTracker:
    """One W&B run. Every call is safe: a failure is one warning, and the pipeline carries on.

    ``wandb`` is imported only when a run starts, so disabled tracking costs nothing and
    writes nothing.
    """

    def __init__(self, run: Any, secrets: Iterable[str] = ()) -> None:
        self._run = run
        self._secrets = [secret for secret in secrets if secret]

    @classmethod
    def start(
        cls,
        *,
        mode: Mode,
        project: str,
        entity: str | None,
        directory: Path,
        config: Mapping[str, Any],
        name: str | None = None,
        tags: Iterable[str] = (),
        api_key: str | None = None,
    ) -> WandbTracker | None:
        """Open a run, or return ``None`` (disabled, or wandb failed to start: warned)."""
        if mode == "disabled":
            return None
        secrets = [api_key] if api_key else []
        try:
            import wandb

            directory.mkdir(parents=True, exist_ok=True)
            # The key goes to wandb only where it is needed, and only through its settings:
            # never into the config, which is stored with the run. Git metadata stays off:
            # a remote URL can carry a token; the commit is in the config already.
            settings = wandb.Settings(
                api_key=api_key if mode == "online" else None,
                disable_git=True,
            )
            run = wandb.init(
                project=project,
                entity=entity,
                dir=str(directory),
                mode=mode,
                name=name,
                tags=list(tags),
                job_type="kedro-run",
                config=redact(dict(config), secrets, by_name=False),
                settings=settings,
            )
        except Exception as error:  # tracking never fails the pipeline
            logger.warning(
                "W&B tracking is off for this run: wandb could not start in %s mode (%s).",
                mode,
                scrub(f"{type(error).__name__}: {error}", secrets),
            )
            return None
        logger.info("W&B run %s (%s) logging under %s", getattr(run, "id", "?"), mode, directory)
        return cls(run, secrets)

    @contextmanager
    def _safely(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:  # tracking never fails the pipeline
            logger.warning(
                "W&B tracking could not %s (%s); the run goes on without it.",
                what,
                scrub(f"{type(error).__name__}: {error}", self._secrets),
            )

    def log_train_metrics(self, train_metrics: Mapping[str, Any]) -> None:
        """Training totals into the run summary (the curves came live from the Trainer)."""
        with self._safely("log the training metrics"):
            self._run.summary.update(train_summary(train_metrics))

    def log_heldout_metrics(self, heldout_metrics: Mapping[str, Any]) -> None:
        """Every held-out number, flattened (``heldout/mmlu/letter_acc/finetuned``)."""
        with self._safely("log the held-out metrics"):
            flat = flatten_heldout_metrics(heldout_metrics)
            self._run.log(flat)
            self._run.summary.update(flat)

    def log_benchmark_metrics(self, benchmark_metrics: Mapping[str, Any]) -> None:
        """Every benchmark number, flattened (``benchmark/mmlu/0-shot/plain/acc/finetuned``)."""
        with self._safely("log the benchmark metrics"):
            flat = flatten_benchmark_metrics(benchmark_metrics)
            self._run.log(flat)
            self._run.summary.update(flat)

    def log_report(self, html: str, markdown: str | None = None) -> None:
        """The report as a W&B HTML panel and as a ``report`` artifact (html and markdown)."""
        with self._safely("log the report"):
            import wandb

            html = scrub(html, self._secrets)
            self._run.log({"report": wandb.Html(html, inject=False, data_is_not_path=True)})
            artifact = wandb.Artifact(f"report-{self._run.id}", type="report")
            with artifact.new_file("report.html", encoding="utf-8") as file:
                file.write(html)
            if markdown is not None:
                with artifact.new_file("report.md", encoding="utf-8") as file:
                    file.write(scrub(markdown, self._secrets))
            self._run.log_artifact(artifact)

    def log_adapter(self, path: str | Path) -> None:
        """The saved adapter folder as a ``model`` artifact."""
        with self._safely("log the adapter"):
            import wandb

            artifact = wandb.Artifact(f"adapter-{self._run.id}", type="model")
            artifact.add_dir(str(path))
            self._run.log_artifact(artifact)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; a non-zero ``exit_code`` marks it failed in W&B."""
        with self._safely("finish the run"):
            self._run.finish(exit_code=exit_code)
