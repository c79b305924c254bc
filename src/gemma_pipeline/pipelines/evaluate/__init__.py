"""evaluate: base model and base + adapter on the held-out split → metrics JSON."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
