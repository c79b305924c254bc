"""The project's parameters and artifacts, read as ``kedro run`` reads them, without a run.

``conf/<env>`` is read with the project's config-loader settings and the catalog's entries are
built by Kedro, so "the latest merged model" is exactly the version Kedro would load, and a
version that is not there is reported with the versions that are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kedro.config import OmegaConfigLoader
from kedro.io import AbstractDataset, DatasetError
from kedro.utils import find_kedro_project

from gemma_pipeline.config import (
    CONFIG_LOADER_ARGS,
    SECTIONS,
    ParameterError,
    StrictModel,
    parse_params,
)
from gemma_pipeline.export.gguf import files_in

from .errors import UserInputError

ModelT = TypeVar("ModelT", bound=StrictModel)

#: What each ``--model`` choice loads from the catalog (the base needs no artifact).
ARTIFACTS = {"adapter": "adapter", "merged": "merged_model", "gguf": "gguf_files"}
#: Where a missing artifact comes from.
PRODUCERS = {
    "adapter": "kedro run --pipeline training",
    "merged_model": "kedro run --pipeline export",
    "gguf_files": "kedro run --pipeline export",
}


@dataclass
class Project:
    root: Path
    env: str
    parameters: dict[str, Any] = field(repr=False)
    catalog_config: dict[str, Any] = field(repr=False)

    @classmethod
    def load(cls, start: str | Path | None = None, env: str | None = None) -> Project:
        """The Kedro project at or above ``start`` (the working directory by default); ``env``
        defaults to ``KEDRO_ENV``, then the project's default run environment (local)."""
        start = Path(start or Path.cwd()).resolve()
        root = find_kedro_project(start)
        if root is None:
            raise UserInputError(
                f"{start} is not inside a Kedro project (no pyproject.toml with [tool.kedro]); "
                f"run from the project folder or pass --project"
            )
        env = env or os.environ.get("KEDRO_ENV") or CONFIG_LOADER_ARGS["default_run_env"]
        if not (root / "conf" / env).is_dir() and env != CONFIG_LOADER_ARGS["default_run_env"]:
            raise UserInputError(f"--env {env}: no folder conf/{env} in {root}")
        loader = OmegaConfigLoader(conf_source=str(root / "conf"), env=env, **CONFIG_LOADER_ARGS)
        return cls(root, env, dict(loader["parameters"]), dict(loader["catalog"]))

    def params(self, section: str) -> Any:
        """A validated parameters section (``config.SECTIONS``)."""
        if section not in self.parameters:
            raise UserInputError(f"conf/{self.env}: no parameters section {section!r}")
        try:
            return parse_params(SECTIONS[section], self.parameters[section], section)
        except ParameterError as error:
            raise UserInputError(" ".join(str(error).split())) from error

    def filepath(self, name: str) -> Path:
        """Where a catalog entry's versions live (absolute)."""
        return Path(self._entry(name)["filepath"])

    def _entry(self, name: str) -> dict[str, Any]:
        entry = dict(self.catalog_config[name])
        if "filepath" in entry and not Path(entry["filepath"]).is_absolute():
            entry["filepath"] = str(self.root / entry["filepath"])
        return entry

    def versions(self, name: str) -> list[str]:
        """The saved versions of a versioned catalog entry, oldest first."""
        folder = self.filepath(name)
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def artifact(self, name: str, version: str | None = None) -> str:
        """What the catalog entry loads (a folder's path for models): the latest version, or
        ``version``. Raises ``UserInputError`` naming what exists when it is not there."""
        entry = self._entry(name)
        try:
            # The dataset itself, not a DataCatalog: the catalog logs every load at INFO.
            return AbstractDataset.from_config(name, entry, load_version=version).load()
        except DatasetError as error:
            versions = self.versions(name)
            where = self.filepath(name)
            if version and version not in versions:
                shown = ", ".join(versions[-5:]) or "none"
                raise UserInputError(
                    f"No {name} version {version} in {where} (latest versions: {shown})"
                ) from error
            if not versions:
                raise UserInputError(
                    f"No {name} in {where}: make one with `{PRODUCERS.get(name, 'kedro run')}`"
                    f"{'' if self.env == 'local' else f' --env {self.env}'}"
                ) from error
            raise UserInputError(f"Cannot load {name} from {where}: {error}") from error


def gguf_file(project: Project, version: str | None, gguf_type: str) -> Path:
    """The run's exported GGUF file of ``gguf_type`` (f16, q8_0 or q4_k_m)."""
    folder = project.artifact(ARTIFACTS["gguf"], version)
    files = files_in(folder)
    if gguf_type not in files:
        raise UserInputError(
            f"No {gguf_type} GGUF in {folder} (there: {', '.join(sorted(files)) or 'none'})"
        )
    return files[gguf_type]
