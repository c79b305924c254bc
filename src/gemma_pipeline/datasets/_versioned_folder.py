"""What a versioned dataset stored as a folder needs: the path, and writes that are atomic."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from kedro.io import AbstractVersionedDataset, Version

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


class VersionedFolderDataset(AbstractVersionedDataset[_DI, _DO]):
    """Base for datasets saved as a folder under ``<filepath>/<version>/<name>/``."""

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath=PurePosixPath(filepath), version=version)
        self.metadata = metadata

    def _write_folder(self, write: Callable[[Path], None]) -> None:
        """Call ``write(folder)`` next to the target, then rename it into place.

        A run killed mid-write never leaves a half folder that a later ``kedro run`` would
        load as the latest version; a write that fails (a full disk) leaves no folder at all.
        """
        path = Path(self._get_save_path())
        partial = path.with_name(path.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        try:
            write(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # a full disk keeps nothing of it
            raise
        partial.rename(path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
