"""Raw question sources (MMLU, Math-QA) and their normalization into one schema.

Pure pandas: nothing here knows about Kedro, so nodes stay thin wrappers around these.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pandas as pd

from gemma_pipeline.sources.errors import SourceLayoutError
from gemma_pipeline.sources.gsm8k import normalize_gsm8k
from gemma_pipeline.sources.loaders import load_hub, load_local
from gemma_pipeline.sources.mathqa import normalize_mathqa, parse_options
from gemma_pipeline.sources.mmlu import normalize_mmlu
from gemma_pipeline.sources.schema import LETTERS, QUESTION_COLUMNS, REJECT_COLUMNS, make_row_id

Normalizer = Callable[..., tuple[pd.DataFrame, pd.DataFrame]]

NORMALIZERS: dict[str, Normalizer] = {
    "mmlu": normalize_mmlu,
    "mathqa": normalize_mathqa,
    "gsm8k": normalize_gsm8k,
}


def normalize(
    task: str,
    raw: pd.DataFrame,
    *,
    source: str,
    split: str,
    origin: str,
    keep_duplicates: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalize ``raw`` with the normalizer of ``task``: (accepted, rejected) frames."""
    try:
        normalizer = NORMALIZERS[task]
    except KeyError:
        allowed = ", ".join(sorted(NORMALIZERS))
        raise ValueError(f"unknown task {task!r}; expected one of: {allowed}") from None
    return normalizer(
        raw, source=source, split=split, origin=origin, keep_duplicates=keep_duplicates
    )


# Loaded on first use: importing sample here would make
# `python -m gemma_pipeline.sources.sample` warn that the module was imported twice.
_SAMPLE_EXPORTS = (
    "SAMPLE_SPLITS",
    "generate_gsm8k_raw",
    "generate_mathqa_raw",
    "generate_mmlu_raw",
    "write_sample_files",
)


def __getattr__(name: str) -> Any:
    if name in _SAMPLE_EXPORTS:
        return getattr(importlib.import_module("gemma_pipeline.sources.sample"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LETTERS",
    "NORMALIZERS",
    "QUESTION_COLUMNS",
    "REJECT_COLUMNS",
    "SAMPLE_SPLITS",
    "SourceLayoutError",
    "generate_gsm8k_raw",
    "generate_mathqa_raw",
    "generate_mmlu_raw",
    "load_hub",
    "load_local",
    "make_row_id",
    "normalize",
    "normalize_gsm8k",
    "normalize_mathqa",
    "normalize_mmlu",
    "parse_options",
    "write_sample_files",
]
