"""What a benchmark task is: documents in, requests out, per-document scores back.

After lm-evaluation-harness: a task is data (prompt, choices, target, filters) and the model
sits behind ``loglikelihood`` / ``generate_until`` (``evaluation/engine.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from transformers import PreTrainedTokenizerBase

from gemma_pipeline.config import FormatPromptsParams
from gemma_pipeline.evaluation.engine import GenerationRequest, LoglikelihoodRequest
from gemma_pipeline.pipelines.format_prompts.nodes import render_user_message
from gemma_pipeline.sources.schema import LETTERS

#: plain: lm-eval's own text format, comparable with published numbers.
#: chat: the chat-template format the fine-tune was trained on (format_prompts' templates).
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


@dataclass(frozen=True)
class ChatFormat:
    """The fine-tune's own prompt layout: format_prompts' templates in the chat template.

    Few-shot examples become earlier user/model turns; the model answers with the letter.
    """

    tokenizer: PreTrainedTokenizerBase
    params: FormatPromptsParams

    def user_message(self, row: pd.Series | dict[str, Any]) -> str:
        return render_user_message(pd.Series(row), self.params)

    def answer(self, row: pd.Series | dict[str, Any]) -> str:
        answer = int(row["answer"])
        return self.params.completion.format(letter=LETTERS[answer], text=row["choices"][answer])

    def render(self, turns: Sequence[tuple[str, str]], question: str) -> str:
        """Prompt up to the model turn's header: earlier (user, model) turns, then ``question``."""
        messages = [*_messages(turns), {"role": "user", "content": question}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def render_turns(self, turns: Sequence[tuple[str, str]]) -> str:
        """The earlier turns alone: the part of a prompt that documents sharing them share."""
        if not turns:
            return ""
        return self.tokenizer.apply_chat_template(_messages(turns), tokenize=False)


def _messages(turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    messages = []
    for user, model in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": model}]
    return messages


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict(orient="records")
