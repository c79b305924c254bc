"""tokenize: prompt/completion pairs → token ids with completion-only labels (Arrow)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
