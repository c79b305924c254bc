"""Math-QA as lm-evaluation-harness's ``mathqa`` task defines it.

Prompt "Question: {Problem}\\nAnswer:", scored by log-likelihood of each option's text (with a
leading space); acc takes the most likely option, acc_norm divides by the option's length in
characters. The option texts are lm-eval's own: its regex on the source's raw ``options`` text
(:func:`lm_eval_choices`), not the project's clean parse. The chat style asks the fine-tune's
own question and scores the answer letters.
"""

from __future__ import annotations

import re

import pandas as pd

from gemma_pipeline.evaluation.engine import LoglikelihoodRequest
from gemma_pipeline.prompting import ChatFormat
from gemma_pipeline.sources.schema import LETTERS

from .base import MultipleChoiceDoc, PromptStyle, records, require_chat


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
            texts = plain_choices(doc)
            continuations = [f" {c}" for c in texts]
        else:
            chat = require_chat(chat, "mathqa")
            context = chat.prompt(doc)
            continuations = texts = list(LETTERS[: len(doc["choices"])])
        docs.append(
            MultipleChoiceDoc(
                row_id=doc["row_id"],
                subject=doc["subject"],
                # plain: the options are texts of several tokens; the question they share runs
                # through the model once (the engine's shared prefix), not once per option
                # (29 -> 20 s on the demo). chat: the options are letters, read off one row.
                requests=[
                    LoglikelihoodRequest(
                        context,
                        c,
                        shared_prefix=context if style == "plain" else "",
                        intact_context=style == "chat",
                    )
                    for c in continuations
                ],
                choice_texts=texts,
                gold=int(doc["answer"]),
            )
        )
    return docs


#: lm-eval 0.4.13, ``lm_eval/tasks/mathqa/utils.py`` (``doc_to_choice``): options a..d end at
#: the first ", " after their label, e runs to the end of the text.
_LM_EVAL_OPTION = re.compile(r"[abcd] \) .*?, |e \) .*?$")


def lm_eval_choices(options: str) -> list[str]:
    """The choices lm-eval's ``mathqa`` task reads from a raw ``options`` text, quirks kept.

    Quote characters of a list-like text stay (``12'``), a doubled label keeps the inner one
    (``a ) 2``), a ", " inside an option ends it early, and the number of choices is whatever
    the regex finds, 5 or not: lm-eval scores the row with those.
    """
    return [match[4:].rstrip(" ,") for match in _LM_EVAL_OPTION.findall(options)]


def plain_choices(doc: dict) -> list[str]:
    """The choices of the plain style: lm-eval's, read from the row's ``raw_options``.

    A source that gave its options as a list or mapping has no ``raw_options`` (None), and
    lm-eval could not read it at all; such rows fall back to the project's clean choices.
    """
    raw = doc["raw_options"]
    if not isinstance(raw, str):
        return list(doc["choices"])
    choices = lm_eval_choices(raw)
    if not choices:
        raise ValueError(
            f"mathqa row {doc['row_id']}: lm-eval's options regex finds no choice in "
            f"raw_options {raw!r} (labels must read 'a ) ', lowercase); lm-eval cannot "
            "score this row either"
        )
    return choices
