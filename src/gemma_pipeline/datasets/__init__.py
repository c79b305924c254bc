"""Custom Kedro datasets for the artifacts pandas/JSON datasets cannot hold, and the project's
data catalog (failed saves leave nothing behind)."""

from .catalog import ArtifactCatalog
from .export_folder import ExportFolderDataset, FileInRunFolderDataset
from .hf_arrow import HFArrowDataset
from .peft_adapter import PeftAdapterDataset

__all__ = [
    "ArtifactCatalog",
    "ExportFolderDataset",
    "FileInRunFolderDataset",
    "HFArrowDataset",
    "PeftAdapterDataset",
]
