import pytest
import torch

from gemma_pipeline.evaluation.scoring import MultipleChoiceItem, score_items
from gemma_pipeline.modeling import load_causal_lm


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="unused", dtype="float32")
    return model.eval()


def _prompt(tokenizer, text):
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _reference(model, tokenizer, prompt, continuation):
    """Sum of log p(continuation | prompt) from one plain full-sequence forward."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + cont_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(
        logprobs[len(prompt_ids) - 1 + k, token].item() for k, token in enumerate(cont_ids)
    ), logprobs[len(prompt_ids) - 1]


def _items(tokenizer):
    questions = [
        ("the cat is", ["a b", "the answer is 1 2", "x"], "B. 1<end_of_turn>\n"),
        (" ".join(["cat"] * 45) + " is", ["1", "2 2", "the", "cat cat"], "A. 1<end_of_turn>\n"),
        ("is it", ["a", "b"], "B. b<end_of_turn>\n"),
    ]
    return [
        MultipleChoiceItem(
            prompt=_prompt(tokenizer, question),
            choices=choices,
            letters="ABCDE"[: len(choices)],
            completion=completion,
        )
        for question, choices, completion in questions
    ]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_shared_prefix_scores_match_plain_forwards(tiny_model, tiny_tokenizer, batch_size):
    items = _items(tiny_tokenizer)
    scores = score_items(tiny_model, tiny_tokenizer, items, batch_size=batch_size)

    for item, score in zip(items, scores, strict=True):
        for text, got in zip(item.choices, score.option_logprobs, strict=True):
            expected, _ = _reference(tiny_model, tiny_tokenizer, item.prompt, text)
            assert got == pytest.approx(expected, abs=1e-3)
        expected_nll, next_logprobs = _reference(
            tiny_model, tiny_tokenizer, item.prompt, item.completion
        )
        assert score.completion_nll == pytest.approx(-expected_nll, abs=1e-3)
        letter_ids = [tiny_tokenizer.convert_tokens_to_ids(letter) for letter in item.letters]
        expected_letters = next_logprobs[letter_ids]
        assert score.letter_logprobs == pytest.approx(expected_letters.tolist(), abs=1e-4)
        assert score.letter_mass == pytest.approx(expected_letters.exp().sum().item(), abs=1e-5)
        assert 0 < score.letter_mass < 1
