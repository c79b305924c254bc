"""Model and tokenizer as the ``model`` parameters section describes them."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from gemma_pipeline.config import ModelParams
from gemma_pipeline.distributed import local_rank

from .loading import load_causal_lm, load_tokenizer


def tokenizer_from_params(model_params: ModelParams) -> Any:
    return load_tokenizer(
        model_params.name_or_path,
        embedded_cache_dir=model_params.embedded_cache_dir,
        revision=model_params.revision,
    )


def model_from_params(
    model_params: ModelParams, quantization_config: Any = None
) -> PreTrainedModel:
    """The base model on the GPU when there is one (whole, not sharded), else on the CPU.

    Under a data-parallel launch every process holds the whole model on its own GPU (its
    ``LOCAL_RANK``); ``device_map="auto"`` would spread one model over all of them, which DDP
    cannot train.
    """
    return load_causal_lm(
        model_params.name_or_path,
        embedded_cache_dir=model_params.embedded_cache_dir,
        dtype=model_params.dtype,
        attn_implementation=model_params.attn_implementation,
        revision=model_params.revision,
        quantization_config=quantization_config,
        device_map={"": local_rank()} if torch.cuda.is_available() else None,
    )
