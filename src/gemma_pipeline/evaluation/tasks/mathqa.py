"""Math-QA as lm-evaluation-harness's ``mathqa`` task defines it.

Prompt "Question: {Problem}\\nAnswer:", scored by log-likelihood of each option's text (with a
leading space); acc takes the most likely option, acc_norm divides by the option's length in
characters. The chat style asks the fine-tune's own question and scores the answer letters.
"""

from __future__ import annotations

import pandas as pd

from gemma_pipeline.evaluation.engine import LoglikelihoodRequest
from gemma_pipeline.sources.schema import LETTERS

from .base import ChatFormat, MultipleChoiceDoc, PromptStyle, records


def build(
    test: pd.DataFrame,
    fewshot: pd.DataFrame,
    num_fewshot: int,
    style: PromptStyle,
    chat: ChatFormat | None = None,
) -> list[MultipleChoiceDoc]:
    if num_fewshot:
        raise ValueError("mathqa is scored 0-shot, as lm-eval defines it (num_fewshot: [0])")
    docs = []
    for doc in records(test):
        if style == "plain":
            context = f"Question: {doc['question']}\nAnswer:"
            continuations, texts = [f" {c}" for c in doc["choices"]], list(doc["choices"])
        else:
            assert chat is not None, "the chat style needs a ChatFormat"
            context = chat.render([], chat.user_message(doc))
            continuations = texts = list(LETTERS[: len(doc["choices"])])
        docs.append(
            MultipleChoiceDoc(
                row_id=doc["row_id"],
                subject=doc["subject"],
                requests=[LoglikelihoodRequest(context, c) for c in continuations],
                choice_texts=texts,
                gold=int(doc["answer"]),
            )
        )
    return docs
