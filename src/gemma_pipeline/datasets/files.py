"""kedro-datasets' file datasets, except that a save is atomic on a local disk.

kedro-datasets opens the final path (``<filepath>/<version>/<name>``) and writes into it, and a
later ``kedro run`` loads the newest version whose path exists. A run killed mid-write therefore
left a truncated file that every later run loaded as the latest version. These subclasses write
``<name>.partial`` in the same folder and rename it to ``<name>`` once the write has finished: a
rename within a folder is atomic, and Kedro's version glob never matches the ``.partial`` name.
Remote filesystems are left as they are (an object store's upload appears whole or not at all).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, Any

from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset as _MatplotlibDataset
from kedro_datasets.pandas import ParquetDataset as _ParquetDataset
from kedro_datasets.text import TextDataset as _TextDataset

__all__ = ["JSONDataset", "MatplotlibDataset", "ParquetDataset", "TextDataset"]

#: What a write in progress is called; no catalog file name ends with it.
PARTIAL_SUFFIX = ".partial"


@contextlib.contextmanager
def _write_then_rename(fs: Any, path: str, mode: str, kwargs: dict[str, Any]) -> Iterator[IO]:
    partial = path + PARTIAL_SUFFIX
    try:
        with fs.open(partial, mode, **kwargs) as file:
            yield file
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise
    os.replace(partial, path)


class _RenameOnClose:
    """A local fsspec filesystem whose ``open`` for writing is ``_write_then_rename``; the rest
    is the filesystem's own. kedro-datasets opens its files in ``with`` blocks only."""

    def __init__(self, fs: Any) -> None:
        self._fs = fs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" not in mode and "x" not in mode:
            return self._fs.open(path, mode, **kwargs)
        return _write_then_rename(self._fs, self._fs._strip_protocol(path), mode, kwargs)


class _AtomicSaves:
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self._protocol == "file":
            self._fs = _RenameOnClose(self._fs)


class ParquetDataset(_AtomicSaves, _ParquetDataset):
    """``pandas.ParquetDataset`` whose saves are atomic (module docstring)."""


class JSONDataset(_AtomicSaves, _JSONDataset):
    """``json.JSONDataset`` whose saves are atomic (module docstring)."""


class TextDataset(_AtomicSaves, _TextDataset):
    """``text.TextDataset`` whose saves are atomic (module docstring)."""


class MatplotlibDataset(_AtomicSaves, _MatplotlibDataset):
    """``matplotlib.MatplotlibDataset`` whose saves are atomic (module docstring)."""
