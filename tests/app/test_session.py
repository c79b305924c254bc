"""The demo's answers without the page: what it samples, and that it scores as `evaluate` did."""

from __future__ import annotations

import math
import random

import pytest

from gemma_pipeline.app.render import heldout_html
from gemma_pipeline.app.session import SideBySide
from gemma_pipeline.inference.errors import UserInputError
from gemma_pipeline.inference.project import Project


@pytest.fixture(scope="module")
def session(tiny_run) -> SideBySide:
    return SideBySide.load(Project.load(tiny_run, "tiny"))


def test_held_out_questions_come_from_the_runs_evaluated_split(session):
    evaluated = set(session.results.predictions["row_id"])
    rng = random.Random(0)
    drawn = [session.sample_question(task, rng) for task in ("mmlu", "mathqa", None) * 4]
    assert all(q["row_id"] in evaluated for q in drawn)
    assert {q["task"] for q in drawn[:12:3]} == {"mmlu"}
    assert {q["task"] for q in drawn[1:12:3]} == {"mathqa"}
    assert set(session.results.questions["split"]) == {"test"}


def test_option_probabilities_are_what_evaluate_stored_for_the_question(session):
    predictions = session.results.predictions.set_index(["row_id", "model"])
    rng = random.Random(1)
    for _ in range(4):
        question = session.sample_question(None, rng)
        answer = session.score(question)
        for model, verdict in answer.verdicts.items():
            stored = predictions.loc[(question["row_id"], model)]
            logprobs = list(stored["letter_logprobs"])
            total = sum(math.exp(lp) for lp in logprobs)
            assert verdict.probabilities == pytest.approx(
                [math.exp(lp) / total for lp in logprobs], abs=1e-4
            )
            assert sum(verdict.probabilities) == pytest.approx(1.0, abs=1e-9)
            assert verdict.stored_choice == stored["letter_pred"]
            assert verdict.correct == (verdict.choice == question["answer"])
        html = heldout_html(answer)
        assert html.count('data-correct="true"') >= 1 and "✓ correct" in html


def test_a_free_question_streams_both_models_own_greedy_answers(session):
    from gemma_pipeline.inference.decoding import Decoding

    updates = list(session.answer_both("Name a prime number.", 12))
    assert len(updates) > 2  # streamed
    decoding = Decoding(max_new_tokens=12)
    for model, text in zip((session.base, session.finetuned), updates[-1], strict=True):
        ids = model.encode(model.render("Name a prime number."))
        assert text == "".join(model.stream(ids, decoding))


@pytest.mark.parametrize(
    ("question", "message"),
    [("  ", "The prompt is empty"), ("planet " * 2000, "this page takes up to 1024")],
)
def test_bad_questions_are_refused_with_a_reason(session, question, message):
    with pytest.raises(UserInputError, match=message):
        list(session.answer_both(question, 8))


def test_an_adapter_never_evaluated_says_how_to_evaluate_it(tiny_run, tmp_path):
    import shutil

    project = Project.load(tiny_run, "tiny")
    latest = project.versions("adapter")[-1]
    fresh = project.filepath("adapter") / "2099-01-01T00.00.00.000Z"
    shutil.copytree(project.filepath("adapter") / latest, fresh)
    try:
        with pytest.raises(UserInputError, match="--load-versions adapter:2099-01-01"):
            SideBySide.load(project)
    finally:
        shutil.rmtree(fresh)
