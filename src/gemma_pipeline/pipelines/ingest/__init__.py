"""ingest: raw sources (hub, local files, embedded sample) → one normalized questions table."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
