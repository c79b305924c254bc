"""The project's data catalog: Kedro's, with saves that fail cleanly."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kedro.io import AbstractVersionedDataset, DataCatalog, DatasetError


class ArtifactCatalog(DataCatalog):
    """Kedro's ``DataCatalog``, except that a save that fails leaves nothing behind.

    A full disk or a refused write can fail a save halfway. Kedro's file datasets write
    straight into ``<filepath>/<version>/<name>``, so a truncated file would become the
    latest version, and the next run would load it. Here, a failed save of a versioned local
    dataset removes the version folder it created, so the last complete version stays the
    latest. The error names the dataset, the path and what the OS said::

        Could not save 'questions' to '.../questions.parquet/<version>/questions.parquet':
        [Errno 28] No space left on device; nothing of it was kept
    """

    def save(self, ds_name: str, data: Any) -> None:
        dataset = self[ds_name]
        existed = _pinned_version_folder_exists(dataset)
        try:
            super().save(ds_name, data)
        except Exception as error:
            if not isinstance(dataset, AbstractVersionedDataset) or dataset._version is None:
                raise
            path = dataset._get_versioned_path(dataset.resolve_save_version())
            if not existed and _is_local(dataset):
                shutil.rmtree(Path(path).parent, ignore_errors=True)
            raise DatasetError(
                f"Could not save '{ds_name}' to '{path}': {_root_cause(error)}; "
                "nothing of it was kept"
            ) from error


def _pinned_version_folder_exists(dataset: Any) -> bool:
    """Whether ``<filepath>/<save version>`` is already there: then it is not this save's to
    remove (a version that must not be overwritten, or a run folder another dataset made)."""
    version = getattr(dataset, "_version", None)
    if not isinstance(dataset, AbstractVersionedDataset) or version is None:
        return False
    if version.save is None:  # a fresh timestamp, taken when the save starts
        return False
    return Path(dataset._get_versioned_path(version.save)).parent.exists()


def _is_local(dataset: Any) -> bool:
    return getattr(dataset, "_protocol", "file") in ("file", "local")


def _root_cause(error: BaseException) -> BaseException:
    """The innermost error: the OS's own (``[Errno 28] No space left on device: '...'``)
    under Kedro's wrappers."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error
