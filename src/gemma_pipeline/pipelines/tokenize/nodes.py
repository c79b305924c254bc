"""Nodes of the tokenize pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from gemma_pipeline.config import ModelParams, TokenizeParams, parse_params
from gemma_pipeline.modeling.from_params import tokenizer_from_params

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # labels with this value carry no loss (PyTorch cross-entropy convention)
KEPT_COLUMNS = ["row_id", "question_id", "source", "task", "split", "subject", "answer"]


def encode_pair(
    prompt: str,
    completion: str,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> dict[str, Any]:
    """Token ids for prompt + completion, with labels only on the completion.

    Exactly one BOS: chat templates already write it as text, so the tokenizer must not add a
    second one (a doubled BOS measurably hurts Gemma). Too-long rows lose the *start* of the
    prompt (after BOS), never the completion: the options and the answer cue sit at the end.
    """
    bos = tokenizer.bos_token_id
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if bos is not None and (not prompt_ids or prompt_ids[0] != bos):
        prompt_ids = [bos, *prompt_ids]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if bos is not None and bos in prompt_ids[1:] + completion_ids:
        raise ValueError(f"BOS token found inside a prompt or completion: {prompt[:80]!r}")

    truncated = len(prompt_ids) + len(completion_ids) > max_length
    if truncated:
        # Completion keeps at most half the budget, so some of the question always survives.
        completion_ids = completion_ids[: max(max_length // 2, max_length - len(prompt_ids))]
        head = prompt_ids[:1] if bos is not None else []
        room = max_length - len(completion_ids) - len(head)
        prompt_ids = head + prompt_ids[len(prompt_ids) - room :]
    input_ids = prompt_ids + completion_ids
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        "prompt_length": len(prompt_ids),
        "truncated": truncated,
    }


def tokenize_prompts(
    prompts: pd.DataFrame,
    tokenize_params: dict[str, Any],
    model_params: dict[str, Any],
) -> DatasetDict:
    """Tokenize every prompt/completion pair; one Arrow split per data split."""
    params = parse_params(TokenizeParams, tokenize_params, "tokenize")
    model = parse_params(ModelParams, model_params, "model")
    tokenizer = tokenizer_from_params(model)

    def encode_batch(batch: dict[str, list]) -> dict[str, list]:
        encoded = [
            encode_pair(prompt, completion, tokenizer, params.max_length)
            for prompt, completion in zip(batch["prompt"], batch["completion"], strict=True)
        ]
        return {key: [row[key] for row in encoded] for key in encoded[0]}

    splits = {}
    for split, frame in prompts.groupby("split", sort=True):
        dataset = Dataset.from_pandas(
            frame[[*KEPT_COLUMNS, "prompt", "completion"]], preserve_index=False
        )
        splits[split] = dataset.map(
            encode_batch,
            batched=True,
            remove_columns=["prompt", "completion"],
            desc=f"tokenize {split}",
        )
        n_truncated = sum(splits[split]["truncated"])
        log = logger.warning if n_truncated else logger.info
        log(
            "tokenize %s: %d rows, %d truncated to max_length=%d",
            split,
            len(dataset),
            n_truncated,
            params.max_length,
        )
    return DatasetDict(splits)
