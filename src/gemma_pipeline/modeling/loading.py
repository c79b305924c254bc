"""Load Gemma tokenizers and causal LMs from a hub id, a local folder or the embedded model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from gemma_pipeline.modeling.chat_template import ensure_chat_template
from gemma_pipeline.modeling.embedded import EMBEDDED_MODEL_ID, ensure_embedded_model

DTypeName = Literal["float32", "bfloat16", "float16"]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

#: Offline fallback that the hub error message points to.
OFFLINE_HINT = (
    "To run without the Hugging Face Hub, use the offline demo environment, which uses the "
    f"embedded model {EMBEDDED_MODEL_ID!r}: `kedro run --env demo`."
)


class ModelSourceUnavailableError(OSError):
    """A hub model could not be fetched (no network, offline mode, gated repo without token...).

    Subclasses OSError, the error transformers raises itself, so existing handlers keep working.
    """


def resolve_model_path(name_or_path: str, *, embedded_cache_dir: str | Path) -> str:
    """Map a model name to what ``from_pretrained`` should receive.

    ``EMBEDDED_MODEL_ID`` becomes the converted embedded folder (built on first use), an
    existing local folder is returned as is, and anything else is assumed to be a hub id.
    """
    if name_or_path == EMBEDDED_MODEL_ID:
        return str(ensure_embedded_model(embedded_cache_dir))
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    return name_or_path


def load_tokenizer(
    name_or_path: str,
    *,
    embedded_cache_dir: str | Path,
    revision: str | None = None,
    token: str | None = None,
) -> Any:
    """Tokenizer ready for supervised fine-tuning: chat template, pad token, right padding.

    Right padding suits training (labels line up with inputs); batched generation should switch
    a copy to left padding.
    """
    path = resolve_model_path(name_or_path, embedded_cache_dir=embedded_cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, token=token)
    except OSError as error:
        if Path(path).is_dir():
            raise
        raise hub_unavailable_error(name_or_path, error) from error
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        # Gemma's vocabulary has a dedicated <pad>; eos only as a last resort, since padding
        # with eos would mask the real eos out of the loss.
        has_pad = "<pad>" in tokenizer.get_vocab()
        tokenizer.pad_token = "<pad>" if has_pad else tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    *,
    embedded_cache_dir: str | Path,
    dtype: DTypeName = "float32",
    attn_implementation: str = "eager",
    revision: str | None = None,
    token: str | None = None,
    quantization_config: Any = None,
    device_map: str | dict[str, Any] | None = None,
) -> PreTrainedModel:
    """Causal LM from safetensors weights only, never running code from the model repo.

    ``attn_implementation`` defaults to "eager" because Gemma 2 soft-caps its attention logits
    (``attn_logit_softcapping``) and SDPA kernels cannot apply that cap: transformers refuses
    SDPA for Gemma 2, and silently dropping the cap would change the model's outputs.

    Raises:
        ValueError: ``dtype`` is not one of float32, bfloat16, float16.
        ModelSourceUnavailableError: a hub model could not be fetched.
    """
    torch_dtype = parse_dtype(dtype)
    path = resolve_model_path(name_or_path, embedded_cache_dir=embedded_cache_dir)
    try:
        if attn_implementation == "sdpa":
            refuse_sdpa_with_softcapping(
                AutoConfig.from_pretrained(path, revision=revision, token=token), name_or_path
            )
        return AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch_dtype,
            attn_implementation=attn_implementation,
            revision=revision,
            token=token,
            quantization_config=quantization_config,
            device_map=device_map,
            use_safetensors=True,
            trust_remote_code=False,
        )
    except OSError as error:
        if Path(path).is_dir():
            raise
        raise hub_unavailable_error(name_or_path, error) from error


def refuse_sdpa_with_softcapping(config: Any, name: str) -> None:
    """SDPA kernels cannot cap attention logits: a model that caps them (Gemma 2) would silently
    compute something else. Gemma 3 has no cap (it normalizes queries and keys instead), so
    SDPA computes exactly its attention."""
    text_config = getattr(config, "text_config", None) or config
    if getattr(text_config, "attn_logit_softcapping", None) is not None:
        raise ValueError(
            f"{name} soft-caps its attention logits (attn_logit_softcapping="
            f"{text_config.attn_logit_softcapping}); sdpa would drop the cap. Use "
            f"attn_implementation eager or flex_attention."
        )


def parse_dtype(name: str) -> torch.dtype:
    """Torch dtype for a parameter-file dtype name."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"Unsupported dtype {name!r}; expected one of {sorted(_DTYPES)}") from None


def hub_unavailable_error(name: str, error: OSError) -> ModelSourceUnavailableError:
    """Actionable error for a model that is neither embedded, nor a local folder, nor fetchable."""
    return ModelSourceUnavailableError(
        f"Could not load {name!r}: it is not a local folder and the Hugging Face Hub did not "
        f"provide it (no network, HF_HUB_OFFLINE set, or a gated model without an access "
        f"token?). {OFFLINE_HINT} Original error: {error}"
    )
