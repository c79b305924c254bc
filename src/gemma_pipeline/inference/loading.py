"""The model a user asks for: the base, base + adapter, the merged folder, or a GGUF file of a
run, found through the catalog (latest version, or the one named)."""

from __future__ import annotations

from typing import Literal

from gemma_pipeline.config import (
    FormatPromptsParams,
    InferenceParams,
    ModelParams,
    TrainQloraParams,
)
from gemma_pipeline.evaluation.model import attach_adapter, load_base_for_evaluation
from gemma_pipeline.modeling.loading import (
    ModelSourceUnavailableError,
    load_causal_lm,
    load_tokenizer,
)
from gemma_pipeline.prompting import ChatFormat

from .chat_models import ChatModel, LlamaCppChatModel, TransformersChatModel
from .errors import UserInputError
from .project import ARTIFACTS, Project, gguf_file

ModelKind = Literal["base", "adapter", "merged", "gguf"]
MODEL_KINDS: tuple[str, ...] = ("base", "adapter", "merged", "gguf")


def load_chat_model(
    project: Project,
    kind: ModelKind = "merged",
    version: str | None = None,
    *,
    gguf_type: str | None = None,
) -> ChatModel:
    """``kind`` as ``ask --model`` names it. The base (and base + adapter) load as ``evaluate``
    loads them, quantized as trained; the merged folder in the model section's dtype."""
    if kind not in MODEL_KINDS:
        raise UserInputError(f"--model {kind}: expected one of {', '.join(MODEL_KINDS)}")
    if kind == "base" and version is not None:
        raise UserInputError("--version picks a run's artifact; the base model has none")
    inference: InferenceParams = project.params("inference")
    if kind == "gguf":
        path = gguf_file(project, version, gguf_type or inference.gguf_type)
        return LlamaCppChatModel(str(path), context_length=inference.context_length)
    model_params: ModelParams = project.params("model")
    format_params: FormatPromptsParams = project.params("format_prompts")
    if kind == "merged":
        path = project.artifact(ARTIFACTS["merged"], version)
        tokenizer = load_tokenizer(path, embedded_cache_dir=model_params.embedded_cache_dir)
        model = load_causal_lm(
            path,
            embedded_cache_dir=model_params.embedded_cache_dir,
            dtype=model_params.dtype,
            attn_implementation=model_params.attn_implementation,
        ).eval()
        return TransformersChatModel(model, ChatFormat(tokenizer, format_params), f"merged {path}")
    # Resolve the adapter before loading the base: a missing version fails in milliseconds.
    adapter = project.artifact(ARTIFACTS["adapter"], version) if kind == "adapter" else None
    training: TrainQloraParams = project.params("train_qlora")
    try:
        model, tokenizer = load_base_for_evaluation(model_params, training.quantization)
    except ModelSourceUnavailableError as error:
        raise UserInputError(" ".join(str(error).split())) from error
    description = f"base {model_params.name_or_path}"
    if adapter is not None:
        model, description = attach_adapter(model, adapter), f"{description} + adapter {adapter}"
    return TransformersChatModel(model, ChatFormat(tokenizer, format_params), description)
