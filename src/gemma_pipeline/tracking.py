"""Run provenance and Weights & Biases tracking, for the hooks and the report.

Pure helpers (secret redaction, W&B mode resolution, metric flattening, the run's metadata)
and a thin wrapper around a W&B run that turns every tracking failure into a warning: tracking
observes a run, it must never be the reason one fails.
"""

from __future__ import annotations

import logging
import math
import platform
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

#: A parameter whose name contains one of these (any case) is a credential.
SECRET_MARKERS = ("key", "token", "secret", "password")
REDACTED = "***"

#: The packages whose versions decide what a run computes, recorded with every run.
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "accelerate",
    "datasets",
    "kedro",
    "kedro-datasets",
    "wandb",
)

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


# --- secrets ----------------------------------------------------------------------------------


def is_secret_name(name: object) -> bool:
    """Whether a mapping key names a credential (``api_key``, ``hubToken``, ``PASSWORD``...)."""
    lowered = str(name).lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def redact(value: Any, secrets: Iterable[str] = (), *, by_name: bool = True) -> Any:
    """A copy of ``value`` with every credential replaced by ``"***"``, at any depth.

    With ``by_name`` (for parameters), a value under a key naming a credential
    (:func:`is_secret_name`) is replaced whole, unless it is a mapping: then its strings are
    replaced and its numbers kept, so a section such as ``tokenize: {max_length: 512}`` survives
    while ``hf_token: {value: ...}`` does not. Known secret strings (``secrets``) are cut out of
    every other string, so a key that ended up inside a URL or a message does not slip through
    under an innocent name.
    """
    known = [secret for secret in secrets if secret]
    return _redact(value, known, inside_secret=False, by_name=by_name)


def _redact(value: Any, secrets: list[str], inside_secret: bool, by_name: bool) -> Any:
    if isinstance(value, Mapping):
        redacted = {}
        for key, item in value.items():
            secret_name = by_name and is_secret_name(key)
            if secret_name and not isinstance(item, Mapping):
                redacted[key] = REDACTED
            else:
                redacted[key] = _redact(item, secrets, inside_secret or secret_name, by_name)
        return redacted
    if isinstance(value, list | tuple):
        return [_redact(item, secrets, inside_secret, by_name) for item in value]
    if isinstance(value, str):
        return REDACTED if inside_secret else scrub(value, secrets)
    return value


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a known secret replaced by ``"***"``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


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


# --- W&B mode ---------------------------------------------------------------------------------


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


def flatten_eval_metrics(metrics: Mapping[str, Any], prefix: str = "eval") -> dict[str, float]:
    """``metrics.json`` as flat scalars: ``eval/<task>/<metric>/<base|finetuned|change>[_se]``.

    Only the per-task results are flattened; other top-level keys (say, a later ``lm_eval``
    block) are left out rather than guessed at. Nulls are skipped: W&B has no null scalar.
    """
    flat: dict[str, float] = {}
    tasks = metrics.get("tasks")
    if not isinstance(tasks, Mapping):
        return flat
    for task, result in tasks.items():
        if not isinstance(result, Mapping):
            continue
        if _finite_number(result.get("n")):
            flat[f"{prefix}/{task}/n"] = float(result["n"])
        for row in result.get("metrics") or []:
            for field in ("base", "base_se", "finetuned", "finetuned_se", "change", "change_se"):
                value = row.get(field)
                if _finite_number(value):
                    flat[f"{prefix}/{task}/{row.get('metric')}/{field}"] = float(value)
        for model, spread in (result.get("letter_spread") or {}).items():
            for field in ("max_share", "entropy"):
                value = (spread or {}).get(field)
                if _finite_number(value):
                    flat[f"{prefix}/{task}/letter_spread/{model}/{field}"] = float(value)
    return flat


def train_summary(train_metrics: Mapping[str, Any], prefix: str = "train") -> dict[str, float]:
    """The scalar totals of ``train_metrics.json`` (rows, steps, final loss, time, size)."""
    keys = (
        "train_rows",
        "global_steps",
        "final_train_loss",
        "wall_seconds",
        "trainable_parameters",
    )
    return {
        f"{prefix}/{key}": float(train_metrics[key])
        for key in keys
        if _finite_number(train_metrics.get(key))
    }


# --- run metadata -----------------------------------------------------------------------------


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package; ``None`` for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(project_path: str | Path | None) -> dict[str, Any]:
    """The checked-out commit and whether tracked files differ from it; nulls outside git.

    ``--no-optional-locks`` keeps ``git status`` from rewriting the index, so recording a run
    never races someone committing in the same checkout.
    """
    unknown = {"commit": None, "dirty": None}
    if project_path is None:
        return unknown

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=project_path,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return unknown
    try:
        dirty: bool | None = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return {"commit": commit or None, "dirty": dirty}


def dataset_versions(catalog: Any) -> dict[str, str | None]:
    """For every versioned dataset in a Kedro catalog, the version it would load now.

    ``None`` where nothing has been saved yet. Parameters and unversioned datasets are left
    out; a dataset that cannot even be built is left out too, since the run reports it anyway.
    """
    versions: dict[str, str | None] = {}
    for name in sorted(catalog.keys()):
        if name == "parameters" or name.startswith("params:"):
            continue
        try:
            dataset = catalog[name]
        except Exception:  # a broken entry fails the run itself, loudly
            continue
        resolve = getattr(dataset, "resolve_load_version", None)
        if resolve is None:
            continue
        try:
            version = resolve()
        except Exception:  # VersionNotFoundError and friends: nothing saved yet
            versions[name] = None
            continue
        if version is not None:  # None: the dataset is not versioned
            versions[name] = version
    return versions


def run_metadata(
    catalog: Any,
    *,
    save_version: str | None,
    load_versions: Mapping[str, str] | None,
    env: str | None,
    project_path: str | Path | None,
) -> dict[str, Any]:
    """What a reader needs to reproduce a run: versions of data, code and packages.

    Collected when the catalog is created, before any node saves, so ``dataset_versions`` are
    the versions the run starts from. ``session_id``, ``pipeline_names`` and
    ``written_this_run`` are filled in just before the pipeline runs
    (see :func:`with_pipeline`).
    """
    return {
        "session_id": None,
        "save_version": save_version,
        "env": env,
        "load_versions": dict(load_versions or {}),
        "dataset_versions": dataset_versions(catalog),
        "pipeline_names": None,
        "written_this_run": [],
        "git": git_state(project_path),
        "python": platform.python_version(),
        "packages": package_versions(),
    }


def with_pipeline(
    metadata: Mapping[str, Any], run_params: Mapping[str, Any], outputs: Iterable[str]
) -> dict[str, Any]:
    """``metadata`` plus the session id, the pipelines run and the versioned datasets they write."""
    versioned = set(metadata.get("dataset_versions") or {})
    return {
        **metadata,
        "session_id": run_params.get("run_id"),
        "pipeline_names": run_params.get("pipeline_names"),
        "written_this_run": sorted(set(outputs) & versioned),
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

    def log_eval_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Every evaluation number, flattened (``eval/mmlu/letter_acc/finetuned``)."""
        with self._safely("log the evaluation metrics"):
            flat = flatten_eval_metrics(metrics)
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
