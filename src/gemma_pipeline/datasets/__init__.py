"""Custom Kedro datasets for the artifacts pandas/JSON datasets cannot hold."""

from .export_folder import ExportFolderDataset, FileInRunFolderDataset
from .hf_arrow import HFArrowDataset
from .peft_adapter import PeftAdapterDataset

__all__ = ["ExportFolderDataset", "FileInRunFolderDataset", "HFArrowDataset", "PeftAdapterDataset"]
