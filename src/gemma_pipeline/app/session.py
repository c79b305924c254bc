"""What the page shows, without the page: two models, one run's evaluation, and the questions.

Kept free of Gradio so that each answer the page shows can be checked on its own.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma_pipeline.config import DemoParams
from gemma_pipeline.inference.chat_models import TransformersChatModel, check_fits
from gemma_pipeline.inference.decoding import Decoding
from gemma_pipeline.inference.errors import UserInputError
from gemma_pipeline.inference.loading import load_chat_model
from gemma_pipeline.inference.project import ARTIFACTS, Project
from gemma_pipeline.inference.run_results import RunResults, find_run_results, stored_choice
from gemma_pipeline.sources.schema import LETTERS

MODELS = ("base", "finetuned")


@dataclass(frozen=True)
class ModelVerdict:
    probabilities: list[float]  # p(letter), over the offered letters: sums to 1
    choice: int  # the most likely letter
    correct: bool
    stored_choice: str | None  # what `evaluate` chose for this question in the run


@dataclass(frozen=True)
class HeldOutAnswer:
    question: dict[str, Any]  # row_id, task, subject, question, choices, answer
    verdicts: dict[str, ModelVerdict]  # by MODELS


@dataclass
class SideBySide:
    """The base and the fine-tune (base + the run's adapter, unmerged), as `evaluate` loads
    them, and the evaluation of that adapter."""

    base: TransformersChatModel
    finetuned: TransformersChatModel
    base_name: str
    adapter_version: str
    results: RunResults
    params: DemoParams
    max_batch_tokens: int

    @classmethod
    def load(cls, project: Project, version: str | None = None) -> SideBySide:
        adapter = project.artifact(ARTIFACTS["adapter"], version)
        results = find_run_results(project, adapter)  # fails fast, before the models load
        return cls(
            base=load_chat_model(project, "base"),
            finetuned=load_chat_model(project, "adapter", Path(adapter).parent.name),
            base_name=project.params("model").name_or_path,
            adapter_version=Path(adapter).parent.name,
            results=results,
            params=project.params("inference").demo,
            max_batch_tokens=project.params("evaluate").max_batch_tokens,
        )

    def models(self) -> dict[str, TransformersChatModel]:
        return {"base": self.base, "finetuned": self.finetuned}

    # --- a free question ----------------------------------------------------------------------

    def answer_both(self, question: str, max_new_tokens: int) -> Iterator[tuple[str, str]]:
        """Both answers so far, after every new piece of either; the models run side by side."""
        decoding = Decoding(max_new_tokens=max_new_tokens)
        if not question.strip():
            raise UserInputError("The prompt is empty: nothing to ask.")
        prompts = {}
        for name, model in self.models().items():
            prompts[name] = model.encode(model.render(question))
            if len(prompts[name]) > self.params.max_prompt_tokens:
                raise UserInputError(
                    f"The question is {len(prompts[name])} tokens; this page takes up to "
                    f"{self.params.max_prompt_tokens}. Use `gemma-pipeline ask` for long prompts."
                )
            check_fits(len(prompts[name]), decoding.max_new_tokens, model.context_length)
        pieces: queue.Queue[tuple[str, str | None, BaseException | None]] = queue.Queue()

        def run(name: str) -> None:
            try:
                for piece in self.models()[name].stream(prompts[name], decoding):
                    pieces.put((name, piece, None))
                pieces.put((name, None, None))
            except BaseException as error:  # shown, then re-raised in the caller's thread
                pieces.put((name, None, error))

        threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in MODELS]
        for thread in threads:
            thread.start()
        texts, running = dict.fromkeys(MODELS, ""), set(MODELS)
        while running:
            name, piece, error = pieces.get()
            if error is not None:
                raise error
            if piece is None:
                running.discard(name)
                continue
            texts[name] += piece
            yield texts["base"], texts["finetuned"]
        yield texts["base"], texts["finetuned"]

    # --- a held-out question ------------------------------------------------------------------

    def sample_question(self, task: str | None, rng: random.Random) -> dict[str, Any]:
        """A question of the run's evaluation split (``task``: mmlu, mathqa, or None: either)."""
        questions = self.results.questions
        if task:
            questions = questions[questions["task"] == task]
        if questions.empty:
            raise UserInputError(f"The run evaluated no {task} question")
        row = questions.iloc[rng.randrange(len(questions))]
        return {
            "row_id": str(row["row_id"]),
            "task": str(row["task"]),
            "subject": str(row["subject"] or ""),
            "question": str(row["question"]),
            "choices": [str(choice) for choice in row["choices"]],
            "answer": int(row["answer"]),
        }

    def score(self, question: dict[str, Any]) -> HeldOutAnswer:
        """Each option's probability for both models, scored as `evaluate` scores it."""
        verdicts = {}
        for name, model in self.models().items():
            scores = model.score_question(question, max_batch_tokens=self.max_batch_tokens)
            probabilities = scores.letter_probabilities
            choice = max(range(len(probabilities)), key=probabilities.__getitem__)
            verdicts[name] = ModelVerdict(
                probabilities=probabilities,
                choice=choice,
                correct=choice == question["answer"],
                stored_choice=stored_choice(self.results, question["row_id"], name),
            )
        return HeldOutAnswer(question, verdicts)


def letter(index: int) -> str:
    return LETTERS[index]
