"""Model and tokenizer loading for Gemma: hub ids, local folders and the embedded offline model."""

from gemma_pipeline.modeling.chat_template import GEMMA_CHAT_TEMPLATE, ensure_chat_template
from gemma_pipeline.modeling.embedded import EMBEDDED_MODEL_ID, ensure_embedded_model
from gemma_pipeline.modeling.loading import (
    ModelSourceUnavailableError,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
)

__all__ = [
    "EMBEDDED_MODEL_ID",
    "GEMMA_CHAT_TEMPLATE",
    "ModelSourceUnavailableError",
    "ensure_chat_template",
    "ensure_embedded_model",
    "load_causal_lm",
    "load_tokenizer",
    "resolve_model_path",
]
