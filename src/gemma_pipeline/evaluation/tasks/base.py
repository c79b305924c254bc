"""What a benchmark task is: documents in, requests out, per-document scores back.

After lm-evaluation-harness: a task is data (prompt, choices, target, filters) and the model
sits behind ``loglikelihood`` / ``generate_until`` (``evaluation/engine.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from gemma_pipeline.evaluation.engine import GenerationRequest, LoglikelihoodRequest
from gemma_pipeline.prompting import ChatFormat

#: plain: lm-eval's own text format, comparable with published numbers.
#: chat: the prompt the fine-tune was trained on (``gemma_pipeline.prompting``), token for token.
PromptStyle = Literal["plain", "chat"]


@dataclass(frozen=True)
class MultipleChoiceDoc:
    row_id: str
    subject: str
    requests: list[LoglikelihoodRequest]  # one per choice
    choice_texts: list[str]  # what acc_norm divides by (lm-eval: characters of the choice)
    gold: int


@dataclass(frozen=True)
class GenerationDoc:
    row_id: str
    subject: str
    request: GenerationRequest
    reference: str


def require_chat(chat: ChatFormat | None, task: str) -> ChatFormat:
    """The chat format the chat style needs; a clear error where the caller gave none."""
    if chat is None:
        raise ValueError(f"{task}: the chat prompt style needs a ChatFormat (tokenizer, templates)")
    return chat


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict(orient="records")
