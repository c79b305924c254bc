"""A versioned Kedro dataset for a Hugging Face ``DatasetDict`` saved as Arrow files.

kedro-datasets' ``huggingface.HFDataset`` only reads from the hub (and contacts it even to
describe itself), so tokenized data — which we produce, not download — needs its own dataset.
"""

from __future__ import annotations

from pathlib import Path

from datasets import DatasetDict, load_from_disk
from kedro.io import DatasetError

from ._versioned_folder import VersionedFolderDataset


class HFArrowDataset(VersionedFolderDataset[DatasetDict, DatasetDict]):
    """Saves with ``DatasetDict.save_to_disk`` into ``<filepath>/<version>/<name>/``.

    Example catalog entry::

        tokenized:
          type: gemma_pipeline.datasets.HFArrowDataset
          filepath: data/04_feature/tokenized
          versioned: true
    """

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
        self._write_folder(lambda folder: data.save_to_disk(str(folder)))

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).is_dir()
        except DatasetError:
            return False
