"""A versioned Kedro dataset for a Hugging Face ``DatasetDict`` saved as Arrow files.

kedro-datasets' ``huggingface.HFDataset`` only reads from the hub (and contacts it even to
describe itself), so tokenized data — which we produce, not download — needs its own dataset.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from datasets import DatasetDict, load_from_disk
from kedro.io import AbstractVersionedDataset, DatasetError, Version


class HFArrowDataset(AbstractVersionedDataset[DatasetDict, DatasetDict]):
    """Saves with ``DatasetDict.save_to_disk`` into ``<filepath>/<version>/<name>/``.

    Example catalog entry::

        tokenized:
          type: gemma_pipeline.datasets.HFArrowDataset
          filepath: data/04_feature/tokenized
          versioned: true
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath=PurePosixPath(filepath), version=version)
        self.metadata = metadata

    def load(self) -> DatasetDict:
        path = Path(self._get_load_path())
        if not path.is_dir():
            raise DatasetError(f"No tokenized dataset at '{path}'")
        # load_from_disk memory-maps the Arrow files, so loading is cheap at any size.
        return load_from_disk(str(path))

    def save(self, data: DatasetDict) -> None:
        if not isinstance(data, DatasetDict):
            raise DatasetError(
                f"HFArrowDataset saves a datasets.DatasetDict, got {type(data).__name__}"
            )
        path = Path(self._get_save_path())
        # Write next to the target and rename, so a killed run never leaves a half dataset
        # that a later `kedro run` would load as the latest version.
        partial = path.with_name(path.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        data.save_to_disk(str(partial))
        partial.rename(path)

    def _exists(self) -> bool:
        try:
            path = Path(self._get_load_path())
        except DatasetError:
            return False
        return path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
