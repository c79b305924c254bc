"""Nodes of the tokenize pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from datasets import Dataset, DatasetDict

from gemma_pipeline.config import ModelParams, TokenizeParams, parse_params
from gemma_pipeline.modeling.from_params import tokenizer_from_params
from gemma_pipeline.prompting import encode_training_example

logger = logging.getLogger(__name__)

KEPT_COLUMNS = ["row_id", "question_id", "source", "task", "split", "subject", "answer"]


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
            encode_training_example(prompt, completion, tokenizer, params.max_length)
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
