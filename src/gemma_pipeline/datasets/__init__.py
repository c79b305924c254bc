"""Custom Kedro datasets for the artifacts pandas/JSON datasets cannot hold."""

from .hf_arrow import HFArrowDataset

__all__ = ["HFArrowDataset"]
