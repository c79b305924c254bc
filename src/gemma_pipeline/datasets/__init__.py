"""Custom Kedro datasets for the artifacts pandas/JSON datasets cannot hold."""

from .hf_arrow import HFArrowDataset
from .peft_adapter import PeftAdapterDataset

__all__ = ["HFArrowDataset", "PeftAdapterDataset"]
