"""GSM8K as lm-evaluation-harness's ``gsm8k`` task (v3) defines it.

Prompt: 5 examples drawn from the train split by a ``random.Random(1234)`` shared across the
test rows in order (lm-eval's default sampler and seed), each "Question: {q}\\nAnswer: {a}",
separated by blank lines, then "Question: {q}\\nAnswer:". Greedy generation until
"Question:", "</s>", "<|im_end|>" or the end-of-sequence token, at most 256 new tokens.
Two filters read the number: strict-match takes "#### N"; flexible-extract the last number.
exact_match then ignores case, commas, "$", everything up to "#### " and a final ".".
"""

from __future__ import annotations

import random
import re

import pandas as pd

from gemma_pipeline.evaluation.engine import GenerationRequest
from gemma_pipeline.prompting import ChatFormat

from .base import GenerationDoc, PromptStyle, records, require_chat

UNTIL = ("Question:", "</s>", "<|im_end|>")
MAX_GEN_TOKS = 256
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed
FALLBACK = "[invalid]"

#: name -> (pattern, which match to take: 0 first, -1 last)
FILTERS: dict[str, tuple[re.Pattern[str], int]] = {
    "strict-match": (re.compile(r"#### (\-?[0-9\.\,]+)"), 0),
    "flexible-extract": (re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)"), -1),
}
_IGNORED = [re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$")]


def extract(text: str, filter_name: str) -> str:
    """lm-eval's RegexFilter: the selected match (first non-empty group), or "[invalid]"."""
    pattern, select = FILTERS[filter_name]
    matches = pattern.findall(text)
    if not matches:
        return FALLBACK
    match = matches[select]
    if isinstance(match, tuple):
        match = next((group for group in match if group), FALLBACK)
    return match.strip()


def _normalize(text: str) -> str:
    for pattern in _IGNORED:
        text = pattern.sub("", text)
    return text.lower()


def exact_match(prediction: str, reference: str) -> bool:
    """lm-eval's exact_match with the gsm8k task's settings (ignore_case, regexes_to_ignore)."""
    return _normalize(prediction) == _normalize(reference)


def build(
    test: pd.DataFrame,
    fewshot: pd.DataFrame,
    num_fewshot: int,
    style: PromptStyle,
    chat: ChatFormat | None = None,
) -> list[GenerationDoc]:
    pool = records(fewshot)
    if len(pool) < num_fewshot:
        raise ValueError(f"gsm8k: {num_fewshot}-shot needs {num_fewshot} rows, got {len(pool)}")
    rng = random.Random(FEWSHOT_SEED)
    docs = []
    for doc in records(test):
        examples = rng.sample(pool, num_fewshot) if num_fewshot else []
        if style == "plain":
            context = (
                "".join(
                    f"Question: {ex['question']}\nAnswer: {ex['rationale']}\n\n" for ex in examples
                )
                + f"Question: {doc['question']}\nAnswer:"
            )
            until = UNTIL
        else:
            chat = require_chat(chat, "gsm8k")
            turns = [(f"Question: {ex['question']}", ex["rationale"]) for ex in examples]
            context = chat.render(turns, f"Question: {doc['question']}")
            until = (*UNTIL, "<end_of_turn>")
        docs.append(
            GenerationDoc(
                row_id=doc["row_id"],
                subject=doc["subject"],
                request=GenerationRequest(context, until, MAX_GEN_TOKS),
                reference=doc["rationale"],
            )
        )
    return docs
