"""Versioned Kedro datasets for the export: a folder of files (merged model, GGUF files), and
one file placed inside such a folder of the same run (the model card as the folder's README).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version

from ._versioned_folder import VersionedFolderDataset


class ExportFolderDataset(VersionedFolderDataset[Any, str]):
    """Saves an object with ``save_to(folder)`` into ``<filepath>/<version>/<name>/``; loads
    the folder's path, once it holds a file matching ``required``.

    Loading returns the path, not the model: the consumer decides how to load it, and no model
    ever passes through Kedro's deep-copying memory datasets.

    Example catalog entry::

        merged_model:
          type: gemma_pipeline.datasets.ExportFolderDataset
          filepath: data/06_models/merged_model
          required: config.json
          versioned: true
    """

    def __init__(
        self,
        *,
        filepath: str,
        required: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath=filepath, version=version, metadata=metadata)
        self._required = required

    def load(self) -> str:
        path = Path(self._get_load_path())
        if not any(path.glob(self._required)):
            raise DatasetError(f"No {self._required} in '{path}'")
        return str(path)

    def save(self, data: Any) -> None:
        if not callable(getattr(data, "save_to", None)):
            raise DatasetError(
                f"ExportFolderDataset saves an object with save_to(folder), got "
                f"{type(data).__name__}"
            )
        self._write_folder(data.save_to)

    def _exists(self) -> bool:
        try:
            return any(Path(self._get_load_path()).glob(self._required))
        except DatasetError:
            return False


class FileInRunFolderDataset(AbstractVersionedDataset[str, str]):
    """A text file written into the folder another versioned dataset saved in the same run:
    ``<filepath>/<save version>/<folder name>/<file_name>``, ``filepath`` being that dataset's.

    The folder must already exist (its dataset saved first in the run) and the file must not:
    nothing already written is overwritten.

    Example catalog entry::

        merged_model_card:
          type: gemma_pipeline.datasets.FileInRunFolderDataset
          filepath: data/06_models/merged_model
          file_name: README.md
          versioned: true
    """

    # Not `filename`: Kedro makes catalog keys named filename, filepath or path absolute.
    def __init__(
        self,
        *,
        filepath: str,
        file_name: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath=PurePosixPath(filepath), version=version)
        self._filename = file_name
        self.metadata = metadata

    def _file(self, version: str) -> Path:
        return Path(self._get_versioned_path(version)) / self._filename

    def load(self) -> str:
        # This run's file when it has written one: "latest" may be a concurrent run's folder.
        pinned = self._version.load if self._version else None
        saved = self._version.save if self._version else None
        if not pinned and saved and self._file(saved).is_file():
            path = self._file(saved)
        else:
            path = self._file(self.resolve_load_version())
        if not path.is_file():
            raise DatasetError(f"No {self._filename} in '{path.parent}'")
        return path.read_text(encoding="utf-8")

    def save(self, data: str) -> None:
        path = self._file(self.resolve_save_version())
        if not path.parent.is_dir():
            raise DatasetError(
                f"'{path.parent}' does not exist: its dataset must be saved earlier in this run"
            )
        if path.exists():
            raise DatasetError(f"'{path}' already exists; nothing is overwritten")
        partial = path.with_name(path.name + ".partial")
        try:
            partial.write_text(data, encoding="utf-8")
        except BaseException:
            partial.unlink(missing_ok=True)  # a full disk keeps nothing of it
            raise
        partial.rename(path)

    def _exists(self) -> bool:
        try:
            return self._file(self.resolve_load_version()).is_file()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "file_name": self._filename}
