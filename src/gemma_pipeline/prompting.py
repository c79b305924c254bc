"""How a question becomes what the model reads: one module for training and for evaluation.

The fine-tune is trained on the prompts written here, and the chat-style benchmarks, the
held-out diagnostics (and later the CLI and the web demo) ask it in exactly the same way, down
to the token: the same user message, the same chat template, the same single BOS.

- the user message: the task's template filled with the question and its lettered options;
- the answer text (the completion the model is trained to write), and option rotation;
- the chat rendering, through the tokenizer's own chat template (Gemma's), or through the
  template a GGUF file carries, rendered the same way (``render_chat``);
- the tokenization rules: exactly one BOS, and ``IGNORE_INDEX`` on tokens without loss.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

from gemma_pipeline.config import FormatPromptsParams
from gemma_pipeline.sources.schema import LETTERS

#: Labels with this value carry no loss (PyTorch's cross-entropy convention).
IGNORE_INDEX = -100

Question = Mapping[str, Any] | pd.Series


# --- text ---------------------------------------------------------------------------------------


def render_user_message(question: Question, params: FormatPromptsParams) -> str:
    """The task's user template filled with the question and its lettered options."""
    options = "\n".join(
        params.option.format(letter=LETTERS[i], text=text)
        for i, text in enumerate(question["choices"])
    )
    subject = str(question["subject"]).replace("_", " ").strip() or params.subject_fallback
    return params.templates[question["task"]].user.format(
        subject=subject, question=question["question"], options=options
    )


def answer_text(question: Question, params: FormatPromptsParams) -> str:
    """What the model is trained to answer: the correct option's letter and text."""
    answer = int(question["answer"])
    return params.completion.format(letter=LETTERS[answer], text=question["choices"][answer])


def rotate_options(questions: pd.DataFrame, rotations: int) -> pd.DataFrame:
    """Add cyclically rotated copies of every question's options, right after the original.

    Copies of one question stay adjacent and share ``question_id``, so a sampler that keeps
    groups together puts every rotation of a question in the same batch.
    """
    rows = []
    for _, row in questions.iterrows():
        choices = list(row["choices"])
        for shift in range(min(rotations, len(choices))):
            rotated = row.copy()
            rotated["choices"] = choices[shift:] + choices[:shift]
            rotated["answer"] = (int(row["answer"]) - shift) % len(choices)
            rotated["row_id"] = row["row_id"] if shift == 0 else f"{row['row_id']}/rot{shift}"
            rotated["question_id"] = row["row_id"]
            rows.append(rotated)
    return pd.DataFrame(rows, columns=[*questions.columns, "question_id"]).reset_index(drop=True)


# --- chat ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatFormat:
    """The fine-tune's prompt layout: format_prompts' templates inside the chat template.

    Few-shot examples become earlier user/model turns; the model answers after the last
    user turn's generation prompt (``<start_of_turn>model\\n`` for Gemma).
    """

    tokenizer: PreTrainedTokenizerBase
    params: FormatPromptsParams

    def user_message(self, question: Question) -> str:
        return render_user_message(question, self.params)

    def answer(self, question: Question) -> str:
        return answer_text(question, self.params)

    def render(self, turns: Sequence[tuple[str, str]], user_message: str) -> str:
        """Prompt up to the model turn's header: earlier (user, model) turns, then the message."""
        messages = [*_messages(turns), {"role": "user", "content": user_message}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def render_turns(self, turns: Sequence[tuple[str, str]]) -> str:
        """The earlier turns alone: the part of a prompt that documents sharing them share."""
        if not turns:
            return ""
        return self.tokenizer.apply_chat_template(_messages(turns), tokenize=False)

    def prompt(self, question: Question) -> str:
        """The 0-shot prompt of ``question``: what training, held-out scoring and chat-style
        benchmarks all give the model."""
        return self.render([], self.user_message(question))

    def prompt_and_completion(self, question: Question) -> tuple[str, str]:
        """(prompt, completion) of one training example, both from the chat template.

        The completion is what the template writes after the prompt for the model's turn,
        so it carries exactly the end-of-turn markup the template uses.
        """
        prompt = self.prompt(question)
        full = self.tokenizer.apply_chat_template(
            [
                {"role": "user", "content": self.user_message(question)},
                {"role": "assistant", "content": self.answer(question)},
            ],
            tokenize=False,
        )
        if not full.startswith(prompt):
            raise ValueError(
                "The chat template renders a conversation whose beginning differs from its "
                "generation prompt; cannot split prompt from completion."
            )
        return prompt, full[len(prompt) :]


def render_chat(
    chat_template: str,
    turns: Sequence[tuple[str, str]],
    user_message: str,
    special_tokens: Mapping[str, str],
) -> str:
    """:meth:`ChatFormat.render` for a model known by its template alone (a GGUF file): the
    renderer ``apply_chat_template`` calls, with the special tokens it passes (``bos_token``...).
    """
    messages = [*_messages(turns), {"role": "user", "content": user_message}]
    rendered, _ = render_jinja_template(
        conversations=[messages],
        chat_template=chat_template,
        add_generation_prompt=True,
        **special_tokens,
    )
    return rendered[0]


def _messages(turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    messages = []
    for user, model in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": model}]
    return messages


# --- tokens -------------------------------------------------------------------------------------


def encode_prompts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text with exactly one BOS, at the start.

    Chat templates write the BOS as text, so the tokenizer must not add a second one (a doubled
    BOS measurably hurts Gemma); a text without it (lm-eval's plain prompts) gets the BOS id,
    as lm-eval's HF backend adds it for Gemma.
    """
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is None:
        return encoded
    return [ids if ids[:1] == [bos] else [bos, *ids] for ids in encoded]


#: Normalizers and pre-tokenizers that act on one character at a time (or only add split
#: points): with them a BPE tokenization splits wherever no token spans the boundary.
_LOCAL_NORMALIZERS = {"Replace"}
_LOCAL_PRE_TOKENIZERS = {"Split"}


def _steps(config: dict[str, Any] | None, plural: str) -> list[dict[str, Any]]:
    if config is None:
        return []
    return config[plural] if config["type"] == "Sequence" else [config]


@functools.lru_cache(maxsize=8)
def _spanning_pairs(backend: Any) -> frozenset[str] | None:
    """Every two adjacent characters inside one token (vocabulary or added token); None when
    the tokenizer is not a BPE whose normalizer and pre-tokenizer act character by character."""
    from tokenizers.models import BPE

    if not isinstance(backend.model, BPE) or backend.model.dropout:
        return None
    steps = []
    for component, plural, allowed in (
        (backend.normalizer, "normalizers", _LOCAL_NORMALIZERS),
        (backend.pre_tokenizer, "pretokenizers", _LOCAL_PRE_TOKENIZERS),
    ):
        if component is not None:
            steps += [
                (step, allowed) for step in _steps(json.loads(component.__getstate__()), plural)
            ]
    if not all(step["type"] in allowed and "String" in step["pattern"] for step, allowed in steps):
        return None
    tokens = backend.get_vocab(with_added_tokens=True)
    return frozenset(token[i : i + 2] for token in tokens for i in range(len(token) - 1))


def splits_exactly(tokenizer: PreTrainedTokenizerBase, text: str, at: int) -> bool:
    """Whether ``text``'s tokens are exactly those of ``text[:at]`` followed by ``text[at:]``.

    True only where it is certain: a BPE merges adjacent symbols into vocabulary tokens, so if
    no token contains the two characters on either side of ``at`` (as normalized), no merge
    crosses it and each side is merged on its own. Encoding a few-shot block once and only the
    short rest of each prompt is then exactly lm-eval's encoding of the whole text.
    """
    if not 0 < at < len(text):
        return False
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pairs = _spanning_pairs(backend) if backend is not None else None
    if pairs is None:
        return False
    normalizer = backend.normalizer
    left, right = text[at - 1], text[at]
    if normalizer is not None:
        left, right = normalizer.normalize_str(left), normalizer.normalize_str(right)
    return (
        len(left) == len(right) == 1
        and left + right not in pairs
        and text[at - 1 : at + 1] not in pairs  # added tokens match the text before normalizing
    )


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """:func:`encode_prompts` of one text."""
    return encode_prompts(tokenizer, [text])[0]


def encode_tails(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of texts that follow other tokens: no special tokens added (one batch)."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


def encode_continuation(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of text that follows a prompt: no special tokens added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_training_example(
    prompt: str,
    completion: str,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> dict[str, Any]:
    """Token ids for prompt + completion, with labels only on the completion.

    Too-long rows lose the *start* of the prompt (after BOS), never the completion: the options
    and the answer cue sit at the end.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = encode_continuation(tokenizer, completion)
    bos = tokenizer.bos_token_id
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
