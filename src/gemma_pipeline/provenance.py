"""What a run starts from: data versions, git commit, python and package versions.

Its own module because two readers need it, neither of them W&B-specific: the report prints
it, and the tracking hook stores it with the W&B run. Collecting it never fails a run: where
something cannot be known (no git, nothing saved yet), it is recorded as ``None``.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

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
