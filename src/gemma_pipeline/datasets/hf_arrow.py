"""A versioned Kedro dataset for a Hugging Face ``DatasetDict`` saved as Arrow files.

kedro-datasets' ``huggingface.HFDataset`` only reads from the hub (and contacts it even to
describe itself), so tokenized data — which we produce, not download — needs its own dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kedro.io import DatasetError

from ._versioned_folder import VersionedFolderDataset

# Imported where used: Hugging Face datasets takes a second to import, and Kedro's settings
# import this package (the catalog class) before a bad parameter is reported.
if TYPE_CHECKING:
    from datasets import DatasetDict


class HFArrowDataset(VersionedFolderDataset["DatasetDict", "DatasetDict"]):
    """Saves with ``DatasetDict.save_to_disk`` into ``<filepath>/<version>/<name>/``.

    Example catalog entry::

        tokenized:
          type: gemma_pipeline.datasets.HFArrowDataset
          filepath: data/04_feature/tokenized
          versioned: true
    """

    def load(self) -> DatasetDict:
        from datasets import load_from_disk

        path = Path(self._get_load_path())
        if not path.is_dir():
            raise DatasetError(f"No tokenized dataset at '{path}'")
        # load_from_disk memory-maps the Arrow files, so loading is cheap at any size.
        return load_from_disk(str(path))

    def save(self, data: DatasetDict) -> None:
        from datasets import DatasetDict

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
