"""The held-out diagnostics through the one scoring engine.

``data/heldout_scores_2462dcc.json`` holds the questions and what the project's previous,
separate held-out scorer (``evaluation/scoring.py`` with ``metrics.per_question_results``, at
commit 2462dcc, batch size 2) computed for them on this suite's tiny model in float32: the
engine must reproduce it.
"""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from gemma_pipeline.evaluation.heldout import compare, letter_spread, score_heldout
from gemma_pipeline.modeling import load_causal_lm
from gemma_pipeline.prompting import encode_continuation, encode_prompt

BEFORE = json.loads((Path(__file__).parent / "data" / "heldout_scores_2462dcc.json").read_text())


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="unused", dtype="float32")
    return model.eval()


@pytest.fixture(scope="module")
def questions():
    return pd.DataFrame([entry["question"] for entry in BEFORE["questions"]])


def _plain_logprobs(model, tokenizer, prompt, continuation):
    """Sum of log p(continuation | prompt) from one plain full-sequence forward, and the
    next-token log-probabilities after the prompt."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    cont_ids = encode_continuation(tokenizer, continuation)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + cont_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    total = sum(logprobs[len(prompt_ids) - 1 + k, t].item() for k, t in enumerate(cont_ids))
    return total, logprobs[len(prompt_ids) - 1]


@pytest.mark.parametrize("max_batch_tokens", [64, 100_000])
def test_diagnostics_equal_plain_unbatched_forwards(
    tiny_model, tiny_tokenizer, questions, max_batch_tokens
):
    scores = score_heldout(tiny_model, tiny_tokenizer, questions, max_batch_tokens=max_batch_tokens)
    for (_, question), (_, score) in zip(questions.iterrows(), scores.iterrows(), strict=True):
        for text, got in zip(question["choices"], score["option_logprobs"], strict=True):
            expected, _ = _plain_logprobs(tiny_model, tiny_tokenizer, question["prompt"], text)
            assert got == pytest.approx(expected, abs=1e-4)
        nll, after_prompt = _plain_logprobs(
            tiny_model, tiny_tokenizer, question["prompt"], question["completion"]
        )
        assert score["completion_nll"] == pytest.approx(-nll, abs=1e-4)
        assert score["completion_tokens"] == len(
            encode_continuation(tiny_tokenizer, question["completion"])
        )
        letters = [tiny_tokenizer.convert_tokens_to_ids(x) for x in "ABCDE"[: score["n_choices"]]]
        assert score["letter_logprobs"] == pytest.approx(after_prompt[letters].tolist(), abs=1e-5)
        assert score["letter_mass"] == pytest.approx(after_prompt[letters].exp().sum().item())


def test_diagnostics_equal_the_previous_scorers_numbers(tiny_model, tiny_tokenizer, questions):
    scores = score_heldout(tiny_model, tiny_tokenizer, questions, max_batch_tokens=256)
    for entry, (_, score) in zip(BEFORE["questions"], scores.iterrows(), strict=True):
        before = entry["scores"]
        assert score["letter_logprobs"] == pytest.approx(before["letter_logprobs"], abs=1e-5)
        assert score["option_logprobs"] == pytest.approx(before["option_logprobs"], abs=1e-4)
        assert score["letter_mass"] == pytest.approx(before["letter_mass"], abs=1e-6)
        assert score["completion_nll"] == pytest.approx(before["completion_nll"], abs=1e-4)
        for column in ("completion_tokens", "letter_pred", "letter_correct", "option_correct"):
            assert score[column] == before[column], column
        assert score["option_norm_correct"] == before["option_norm_correct"]


def _predictions(correct, letters, nll=None, tokens=None, subject="s"):
    n = len(correct)
    return pd.DataFrame(
        {
            "row_id": [f"r{i}" for i in range(n)],
            "task": ["mmlu"] * n,
            "subject": [subject] * n,
            "letter_pred": letters,
            "letter_correct": [float(c) for c in correct],
            "option_correct": [1.0] * n,
            "option_norm_correct": [0.0] * n,
            "letter_mass": [0.5] * n,
            "completion_nll": nll or [2.0] * n,
            "completion_tokens": tokens or [4] * n,
        }
    )


def test_letter_spread_flags_collapse():
    collapsed = letter_spread(_predictions([1, 0, 0, 0], ["A"] * 4), 4)
    uniform = letter_spread(_predictions([1, 1, 1, 1], list("ABCD")), 4)
    assert collapsed["max_share"] == 1.0 and str(collapsed["entropy"]) == "0.0"  # not "-0.0"
    assert uniform["max_share"] == 0.25 and uniform["entropy"] == pytest.approx(1.0)


def test_compare_uses_paired_differences_and_token_weighted_perplexity():
    base = _predictions([0, 0, 1, 0, 0, 1], list("AAAAAA"), nll=[2, 2, 2, 6, 6, 6])
    finetuned = _predictions([1, 1, 1, 0, 1, 1], list("ABCDAB"), tokens=[2, 2, 2, 2, 2, 6])
    table = compare(base, finetuned, n_letters=4)
    rows = {row["metric"]: row for row in table["metrics"]}
    letter = rows["letter_acc"]
    assert letter["change"] == pytest.approx(3 / 6)
    diffs = pd.Series([1, 1, 0, 0, 1, 0], dtype=float)
    assert letter["change_se"] == pytest.approx(diffs.std(ddof=1) / math.sqrt(6))
    assert letter["paired"] is True
    ppl = rows["completion_perplexity"]
    assert ppl["base"] == pytest.approx(math.exp(24 / 24))
    assert ppl["finetuned"] == pytest.approx(math.exp(12 / 16))
    assert ppl["change_se"] == pytest.approx(math.hypot(ppl["base_se"], ppl["finetuned_se"]))
    entropy = rows["predicted_letter_entropy"]
    assert entropy["base"] == 0.0 and entropy["change_se"] is None
    assert table["n"] == 6
    [subject] = table["per_subject"]
    assert subject["subject"] == "s" and subject["change"] == pytest.approx(0.5)
