"""The fine-tune as one plain model folder: the adapter merged into the base, and its check.

The adapter is merged into the base loaded in bfloat16 (or the dtype asked for), never into
dequantized 4-bit weights: merging into NF4 weights rounds the result a second time, a known
source of lost quality. The folder holds everything ``AutoModelForCausalLM``,
``AutoTokenizer`` and ``apply_chat_template`` need, and what llama.cpp's converter reads:

- the merged weights, as safetensors;
- the tokenizer with Gemma's chat template, and the base's SentencePiece ``tokenizer.model``
  where the base has one (transformers 5 no longer writes it; llama.cpp's Gemma converter
  needs it);
- ``added_tokens_decoder`` in ``tokenizer_config.json``, which transformers 5 no longer writes
  either: without it llama.cpp's converter types ``<start_of_turn>`` as a plain piece, and
  llama.cpp then spells the chat markers out character by character;
- a generation config that stops at ``<end_of_turn>`` as well as ``<eos>``.

The check compares the reloaded folder with base + adapter (unmerged) on fixed chat prompts:
the largest |logit difference|, and whether greedy continuations are identical.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from gemma_pipeline.config import ModelParams
from gemma_pipeline.modeling.embedded import gemma_generation_config
from gemma_pipeline.modeling.from_params import tokenizer_from_params
from gemma_pipeline.modeling.loading import load_causal_lm, load_tokenizer, resolve_model_path
from gemma_pipeline.prompting import encode_prompt

logger = logging.getLogger(__name__)

SENTENCEPIECE_FILE = "tokenizer.model"


def base_sentencepiece_file(model_params: ModelParams) -> Path | None:
    """The base's ``tokenizer.model``: from its local folder, or from the hub's cache (or the
    hub, when online) for a hub id; ``None`` where the base has none."""
    location = resolve_model_path(
        model_params.name_or_path, embedded_cache_dir=model_params.embedded_cache_dir
    )
    if Path(location).is_dir():
        candidate = Path(location) / SENTENCEPIECE_FILE
        return candidate if candidate.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(location, SENTENCEPIECE_FILE, revision=model_params.revision))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def merge_adapter(
    model_params: ModelParams,
    adapter_path: str | Path,
    output_dir: str | Path,
    *,
    dtype: str = "bfloat16",
) -> Path:
    """Merge the adapter into the base (unquantized, in ``dtype``) and save the whole folder."""
    output_dir = Path(output_dir)
    merged_model = merged_in_memory(model_params, adapter_path, dtype=dtype)
    merged_model.save_to(output_dir)
    return output_dir


@dataclass(frozen=True)
class MergedModel:
    """The merged model with what its folder needs beside the weights; ``save_to`` writes it."""

    model: Any
    tokenizer: Any
    sentencepiece: Path | None

    def save_to(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        write_added_tokens_decoder(self.tokenizer, folder)
        if self.sentencepiece is not None:
            shutil.copyfile(self.sentencepiece, folder / SENTENCEPIECE_FILE)
        else:
            logger.info("the base has no %s: none in the merged folder", SENTENCEPIECE_FILE)


def base_plus_adapter(
    model_params: ModelParams, adapter_path: str | Path, *, dtype: str = "bfloat16"
) -> PeftModel:
    """The base loaded unquantized in ``dtype``, with the adapter attached (not merged)."""
    base = load_causal_lm(
        model_params.name_or_path,
        embedded_cache_dir=model_params.embedded_cache_dir,
        dtype=dtype,
        attn_implementation=model_params.attn_implementation,
        revision=model_params.revision,
    )
    return PeftModel.from_pretrained(base, str(adapter_path)).eval()


def merged_in_memory(
    model_params: ModelParams, adapter_path: str | Path, *, dtype: str = "bfloat16"
) -> MergedModel:
    """The adapter merged into the base loaded unquantized in ``dtype``."""
    merged = base_plus_adapter(model_params, adapter_path, dtype=dtype).merge_and_unload()
    tokenizer = tokenizer_from_params(model_params)
    merged.generation_config = gemma_generation_config(tokenizer)
    return MergedModel(merged, tokenizer, base_sentencepiece_file(model_params))


def write_added_tokens_decoder(tokenizer: Any, folder: Path) -> None:
    """Add the added tokens, with their ``special`` flags, to ``tokenizer_config.json`` as
    transformers 4 wrote them (llama.cpp's converter reads them there)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {
        str(token_id): {
            "content": token.content,
            "lstrip": token.lstrip,
            "normalized": token.normalized,
            "rstrip": token.rstrip,
            "single_word": token.single_word,
            "special": token.special,
        }
        for token_id, token in sorted(tokenizer.added_tokens_decoder.items())
    }
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class MergeCheck:
    max_abs_logit_diff: float
    tolerance: float
    greedy_tokens: int
    greedy_identical: bool
    prompts: int

    @property
    def passed(self) -> bool:
        return self.max_abs_logit_diff <= self.tolerance and self.greedy_identical

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class GreedyReference:
    """What the merged model did with one fixed prompt: what the GGUF checks compare with."""

    prompt_ids: list[int]
    continuation: list[int]
    logits_after_prompt: Any  # numpy float32 vector over the vocabulary


@torch.inference_mode()
def greedy_continuation(
    model: torch.nn.Module, prompt_ids: Sequence[int], new_tokens: int
) -> tuple[list[int], torch.Tensor]:
    """``new_tokens`` tokens by argmax of the logits (no sampler, no stop token), and the
    logits over the prompt: the same loop every export check compares against."""
    output = model(input_ids=torch.tensor([list(prompt_ids)]), use_cache=True)
    prompt_logits = output.logits[0].float()
    tokens: list[int] = []
    for _ in range(new_tokens):
        tokens.append(int(output.logits[0, -1].argmax()))
        output = model(
            input_ids=torch.tensor([tokens[-1:]]),
            past_key_values=output.past_key_values,
            use_cache=True,
        )
    return tokens, prompt_logits


def chat_prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """A user message rendered with the chat template, ready for the model's answer."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return encode_prompt(tokenizer, rendered)


def load_merged_folder(merged_dir: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """The folder as a user loads it: plain transformers, nothing of the project."""
    tokenizer = load_tokenizer(str(merged_dir), embedded_cache_dir="unused")
    model = load_causal_lm(str(merged_dir), embedded_cache_dir="unused", dtype=dtype)
    return model.eval(), tokenizer


def check_merged(
    merged_dir: str | Path,
    reference: torch.nn.Module,
    prompts: Sequence[str],
    *,
    tolerance: float,
    greedy_tokens: int = 32,
) -> tuple[MergeCheck, list[GreedyReference]]:
    """Compare the saved folder, reloaded as a user would (in ``reference``'s dtype), with
    ``reference`` (base + adapter, unmerged) on chat-rendered ``prompts``.

    Returns the check and, per prompt, what the merged model did, which the GGUF checks
    compare against.
    """
    dtype = str(next(reference.parameters()).dtype).removeprefix("torch.")
    merged, tokenizer = load_merged_folder(merged_dir, dtype)
    reference = reference.eval()
    largest, identical, merged_did = 0.0, True, []
    for text in prompts:
        ids = chat_prompt_ids(tokenizer, text)
        ours, our_logits = greedy_continuation(merged, ids, greedy_tokens)
        theirs, their_logits = greedy_continuation(reference, ids, greedy_tokens)
        largest = max(largest, float((our_logits - their_logits).abs().max()))
        identical &= ours == theirs
        merged_did.append(GreedyReference(ids, ours, our_logits[-1].numpy()))
    return MergeCheck(largest, tolerance, greedy_tokens, identical, len(prompts)), merged_did
