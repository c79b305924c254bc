"""report: metrics, training history and data counts → versioned markdown/HTML report."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
