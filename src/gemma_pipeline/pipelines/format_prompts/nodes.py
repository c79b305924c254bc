"""Nodes of the format_prompts pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from transformers import PreTrainedTokenizerBase

from gemma_pipeline.config import FormatPromptsParams, ModelParams, parse_params
from gemma_pipeline.modeling.from_params import tokenizer_from_params
from gemma_pipeline.sources.schema import LETTERS

logger = logging.getLogger(__name__)

PROMPT_COLUMNS = [
    "row_id",  # unique per prompt: the question's row_id, plus "/rot<k>" for rotated copies
    "question_id",  # the question's row_id in `questions`: rotated copies share it
    "source",
    "task",
    "split",
    "subject",
    "prompt",  # chat-templated text up to and including the model turn's header
    "completion",  # the model's turn: answer letter and option text, then end of turn
    "answer",
    "answer_letter",
    "choices",
]


def render_user_message(row: pd.Series, params: FormatPromptsParams) -> str:
    """Fill the task's user template with the question and its lettered options."""
    options = "\n".join(
        params.option.format(letter=LETTERS[i], text=text) for i, text in enumerate(row["choices"])
    )
    subject = str(row["subject"]).replace("_", " ").strip() or params.subject_fallback
    return params.templates[row["task"]].user.format(
        subject=subject, question=row["question"], options=options
    )


def rotate_options(questions: pd.DataFrame, rotations: int) -> pd.DataFrame:
    """Add cyclically rotated copies of every question's options, right after the original.

    Copies of one question stay adjacent, so a sampler that keeps groups together puts every
    rotation of a question in the same batch.
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


def render_pair(
    user_message: str, answer_text: str, tokenizer: PreTrainedTokenizerBase
) -> tuple[str, str]:
    """Split one rendered user/model exchange into (prompt, completion).

    Both come from the tokenizer's own chat template, so the completion carries exactly the
    end-of-turn markup the template writes after a model turn.
    """
    user = [{"role": "user", "content": user_message}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": answer_text}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError(
            "The chat template renders a conversation whose beginning differs from its "
            "generation prompt; cannot split prompt from completion."
        )
    return prompt, full[len(prompt) :]


def format_prompts(
    questions: pd.DataFrame,
    format_params: dict[str, Any],
    model_params: dict[str, Any],
) -> pd.DataFrame:
    """Build a prompt/completion pair for every question with the model's chat template."""
    params = parse_params(FormatPromptsParams, format_params, "format_prompts")
    model = parse_params(ModelParams, model_params, "model")
    missing = sorted(set(questions["task"]) - set(params.templates))
    if missing:
        raise ValueError(f"format_prompts.templates has no template for task(s) {missing}")
    is_train = questions["split"] == "train"
    questions = pd.concat(
        [
            rotate_options(questions[is_train], params.train_option_rotations),
            rotate_options(questions[~is_train], 1),
        ],
        ignore_index=True,
    )
    tokenizer = tokenizer_from_params(model)
    prompts, completions, letters = [], [], []
    for _, row in questions.iterrows():
        letter = LETTERS[int(row["answer"])]
        answer_text = params.completion.format(
            letter=letter, text=row["choices"][int(row["answer"])]
        )
        prompt, completion = render_pair(render_user_message(row, params), answer_text, tokenizer)
        prompts.append(prompt)
        completions.append(completion)
        letters.append(letter)
    formatted = questions.assign(prompt=prompts, completion=completions, answer_letter=letters)
    logger.info("format_prompts: %d prompt/completion pairs", len(formatted))
    return formatted[PROMPT_COLUMNS].reset_index(drop=True)
