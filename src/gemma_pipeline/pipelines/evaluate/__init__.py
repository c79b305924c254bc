"""evaluate: the base model, then base + adapter, scored on held-out questions and benchmarks."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
