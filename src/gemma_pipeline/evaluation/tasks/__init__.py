"""Benchmark tasks in lm-evaluation-harness's formats: one small module per task."""

from . import gsm8k, mathqa, mmlu
from .base import GenerationDoc, MultipleChoiceDoc, PromptStyle

#: task name -> module with ``build(test, fewshot, num_fewshot, style, chat)``
TASKS = {"mmlu": mmlu, "mathqa": mathqa, "gsm8k": gsm8k}

__all__ = ["TASKS", "GenerationDoc", "MultipleChoiceDoc", "PromptStyle"]
