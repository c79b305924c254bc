"""The fine-tune as one plain model folder: the adapter merged into the base, and its check.

The adapter is merged into the base loaded in bfloat16 (or the dtype asked for), never into
dequantized 4-bit weights: merging into NF4 weights rounds the result a second time, a known
source of lost quality. The folder holds everything ``AutoModelForCausalLM``,
``AutoTokenizer`` and ``apply_chat_template`` need, and what llama.cpp's converter reads:

- the merged weights, as safetensors;
- the tokenizer with Gemma's chat template, and the base's SentencePiece ``tokenizer.model``
  where the base has one (transformers 5 no longer writes it; llama.cpp's Gemma converter
  needs it);
- a generation config that stops at ``<end_of_turn>`` as well as ``<eos>``.

The check compares the reloaded folder with base + adapter (unmerged) on fixed chat prompts:
the largest |logit difference|, and whether greedy continuations are identical.
"""

from __future__ import annotations

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
    base = load_causal_lm(
        model_params.name_or_path,
        embedded_cache_dir=model_params.embedded_cache_dir,
        dtype=dtype,
        attn_implementation=model_params.attn_implementation,
        revision=model_params.revision,
    )
    merged = PeftModel.from_pretrained(base, str(adapter_path)).merge_and_unload()
    tokenizer = tokenizer_from_params(model_params)
    merged.generation_config = gemma_generation_config(tokenizer)
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    sentencepiece = base_sentencepiece_file(model_params)
    if sentencepiece is not None:
        shutil.copyfile(sentencepiece, output_dir / SENTENCEPIECE_FILE)
    else:
        logger.info("the base has no %s: none in the merged folder", SENTENCEPIECE_FILE)
    return output_dir


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


@torch.inference_mode()
def check_merged(
    merged_dir: str | Path,
    reference: torch.nn.Module,
    prompts: Sequence[str],
    *,
    tolerance: float,
    greedy_tokens: int = 32,
) -> MergeCheck:
    """Compare the saved folder, reloaded as a user would, with ``reference`` (base + adapter,
    unmerged, in the same dtype) on chat-rendered ``prompts``.

    Greedy continuations run exactly ``greedy_tokens`` tokens (no stop token), so every prompt
    compares that many.
    """
    tokenizer = load_tokenizer(str(merged_dir), embedded_cache_dir="unused")
    dtype = next(reference.parameters()).dtype
    merged = load_causal_lm(
        str(merged_dir), embedded_cache_dir="unused", dtype=str(dtype).removeprefix("torch.")
    ).eval()
    reference = reference.eval()
    largest, identical = 0.0, True
    for text in prompts:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        ids = torch.tensor([encode_prompt(tokenizer, rendered)])
        ours, theirs = merged(input_ids=ids).logits.float(), reference(input_ids=ids).logits.float()
        largest = max(largest, float((ours - theirs).abs().max()))
        settings = {"max_new_tokens": greedy_tokens, "min_new_tokens": greedy_tokens}
        settings |= {"do_sample": False, "pad_token_id": tokenizer.pad_token_id}
        continuation = merged.generate(input_ids=ids, **settings)
        expected = reference.generate(input_ids=ids, **settings)
        identical &= torch.equal(continuation, expected)
    return MergeCheck(largest, tolerance, greedy_tokens, identical, len(prompts))
