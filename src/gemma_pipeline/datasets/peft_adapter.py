"""A versioned Kedro dataset for a PEFT adapter: the folder ``save_pretrained`` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import DatasetError

from ._versioned_folder import VersionedFolderDataset


class PeftAdapterDataset(VersionedFolderDataset[Any, str]):
    """Saves a ``PeftModel`` with ``save_pretrained`` (safetensors); loads the folder's path.

    Loading returns the path, not a model: the consumer decides device, dtype and base weights,
    and no model object ever passes through Kedro's deep-copying memory datasets.

    Example catalog entry::

        adapter:
          type: gemma_pipeline.datasets.PeftAdapterDataset
          filepath: data/06_models/adapter
          versioned: true
    """

    def load(self) -> str:
        path = Path(self._get_load_path())
        if not (path / "adapter_config.json").is_file():
            raise DatasetError(f"No PEFT adapter (adapter_config.json) in '{path}'")
        return str(path)

    def save(self, model: Any) -> None:
        if not hasattr(model, "save_pretrained") or not hasattr(model, "peft_config"):
            raise DatasetError(
                f"PeftAdapterDataset saves a peft.PeftModel, got {type(model).__name__}"
            )
        self._write_folder(
            lambda folder: model.save_pretrained(str(folder), safe_serialization=True)
        )

    def _exists(self) -> bool:
        try:
            return (Path(self._get_load_path()) / "adapter_config.json").is_file()
        except DatasetError:
            return False
