"""export: adapter → merged model, GGUF files, their checks, the model card, an optional push."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
