"""Running a causal LM's backbone and LM head separately, so logits are computed only where used.

Gemma's vocabulary (256k-262k) makes the LM head most of a small model's compute. Training and
scoring need logits at a handful of positions; these helpers project just those.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel


def unwrap_causal_lm(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The ``*ForCausalLM`` module under a PEFT wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def backbone_of(model: PreTrainedModel | PeftModel) -> torch.nn.Module:
    causal_lm = unwrap_causal_lm(model)
    return getattr(causal_lm, causal_lm.base_model_prefix)


def project_to_logits(model: PreTrainedModel | PeftModel, hidden: torch.Tensor) -> torch.Tensor:
    """LM head plus final-logit softcapping (Gemma-2), in float32, for the given hidden states."""
    causal_lm = unwrap_causal_lm(model)
    logits = causal_lm.get_output_embeddings()(hidden).float()
    softcap = getattr(causal_lm.config.get_text_config(), "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def next_token_logits(model: PreTrainedModel | PeftModel, hidden: torch.Tensor) -> torch.Tensor:
    """Logits exactly as the model's own forward computes them (softcap in the model's dtype).

    Greedy generation compares them by argmax; computing them as ``model.generate`` does keeps
    the same token wherever the top two are within the dtype's rounding of each other.
    """
    causal_lm = unwrap_causal_lm(model)
    logits = causal_lm.get_output_embeddings()(hidden)
    softcap = getattr(causal_lm.config.get_text_config(), "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def run_backbone(model: PreTrainedModel | PeftModel, **inputs: Any) -> Any:
    """The decoder's output (``last_hidden_state``, ``past_key_values``), no LM head."""
    return backbone_of(model)(**inputs)
