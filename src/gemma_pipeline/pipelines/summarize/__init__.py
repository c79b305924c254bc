"""The summarize pipeline: stored predictions → metrics, on the CPU, without a model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
