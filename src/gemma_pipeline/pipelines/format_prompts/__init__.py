"""format_prompts: normalized questions → chat-templated prompt/completion pairs."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
