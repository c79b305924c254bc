"""Nodes of the format_prompts pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from gemma_pipeline.config import FormatPromptsParams, ModelParams, parse_params
from gemma_pipeline.modeling.from_params import tokenizer_from_params
from gemma_pipeline.prompting import ChatFormat, rotate_options
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
    chat = ChatFormat(tokenizer_from_params(model), params)
    pairs = [chat.prompt_and_completion(row) for _, row in questions.iterrows()]
    formatted = questions.assign(
        prompt=[prompt for prompt, _ in pairs],
        completion=[completion for _, completion in pairs],
        answer_letter=[LETTERS[int(answer)] for answer in questions["answer"]],
    )
    logger.info("format_prompts: %d prompt/completion pairs", len(formatted))
    return formatted[PROMPT_COLUMNS].reset_index(drop=True)
