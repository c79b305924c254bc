"""train_qlora: tokenized train split → LoRA adapter, training metrics and loss curve."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
