import logging

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_pipeline.pipelines.tokenize.nodes import IGNORE_INDEX, encode_pair, tokenize_prompts

WORDS = st.lists(
    st.sampled_from(["the", "answer", "is", "a", "b", "1", "2", "cat", "x"]), max_size=60
)


def _prompt(tokenizer, text: str) -> str:
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_exactly_one_bos_and_completion_only_labels(tiny_tokenizer):
    prompt = _prompt(tiny_tokenizer, "what is the answer")
    assert prompt.startswith(tiny_tokenizer.bos_token)  # the template writes BOS as text
    row = encode_pair(prompt, "B. 2<end_of_turn>\n", tiny_tokenizer, max_length=512)

    ids, labels = row["input_ids"], row["labels"]
    assert ids.count(tiny_tokenizer.bos_token_id) == 1 and ids[0] == tiny_tokenizer.bos_token_id
    n = row["prompt_length"]
    assert labels[:n] == [IGNORE_INDEX] * n
    assert labels[n:] == ids[n:] and len(labels[n:]) > 0
    assert tiny_tokenizer.decode(ids[n:]).startswith("B")
    assert not row["truncated"]


def test_bos_is_added_when_the_prompt_text_has_none(tiny_tokenizer):
    row = encode_pair("the answer is", " a", tiny_tokenizer, max_length=64)
    assert row["input_ids"].count(tiny_tokenizer.bos_token_id) == 1
    assert row["input_ids"][0] == tiny_tokenizer.bos_token_id


def test_truncation_cuts_the_prompt_head_and_keeps_the_completion(tiny_tokenizer):
    prompt = _prompt(tiny_tokenizer, " ".join(["cat"] * 200) + " the answer is")
    completion = "A. 1<end_of_turn>\n"
    full = encode_pair(prompt, completion, tiny_tokenizer, max_length=10_000)
    cut = encode_pair(prompt, completion, tiny_tokenizer, max_length=32)

    assert cut["truncated"] and len(cut["input_ids"]) == 32
    assert cut["input_ids"][0] == tiny_tokenizer.bos_token_id
    n_completion = len(full["input_ids"]) - full["prompt_length"]
    assert cut["input_ids"][-n_completion:] == full["input_ids"][-n_completion:]
    # The end of the prompt (the model-turn header) survives, the start does not.
    tail = full["input_ids"][full["prompt_length"] - 5 : full["prompt_length"]]
    assert cut["input_ids"][cut["prompt_length"] - 5 : cut["prompt_length"]] == tail


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prompt_words=WORDS, completion_words=WORDS, max_length=st.integers(10, 80))
def test_invariants_hold_for_any_pair(tiny_tokenizer, prompt_words, completion_words, max_length):
    prompt = _prompt(tiny_tokenizer, " ".join(prompt_words))
    completion = " ".join(completion_words) + "<end_of_turn>\n"
    row = encode_pair(prompt, completion, tiny_tokenizer, max_length=max_length)

    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels) == len(row["attention_mask"]) <= max_length
    assert ids.count(tiny_tokenizer.bos_token_id) == 1 and ids[0] == tiny_tokenizer.bos_token_id
    assert all(label == IGNORE_INDEX for label in labels[: row["prompt_length"]])
    assert labels[row["prompt_length"] :] == ids[row["prompt_length"] :]
    assert any(label != IGNORE_INDEX for label in labels)


def test_tokenize_prompts_splits_and_logs_truncation(tiny_tokenizer_dir, tiny_tokenizer, caplog):
    long_question = " ".join(["cat"] * 100)
    prompts = pd.DataFrame(
        {
            "row_id": ["r1", "r2", "r3"],
            "question_id": ["r1", "r2", "r3"],
            "source": ["s"] * 3,
            "task": ["mmlu"] * 3,
            "split": ["train", "train", "test"],
            "subject": ["", "", "x"],
            "answer": [0, 1, 2],
            "prompt": [_prompt(tiny_tokenizer, q) for q in ["a", long_question, "b"]],
            "completion": ["A. 1<end_of_turn>\n"] * 3,
        }
    )
    model = {"name_or_path": str(tiny_tokenizer_dir)}
    with caplog.at_level(logging.INFO):
        tokenized = tokenize_prompts(prompts, {"max_length": 40}, model)

    assert set(tokenized) == {"train", "test"}
    assert tokenized["train"]["row_id"] == ["r1", "r2"]
    assert tokenized["train"]["truncated"] == [False, True]
    assert max(len(ids) for ids in tokenized["train"]["input_ids"]) == 40
    assert "1 truncated to max_length=40" in caplog.text


def test_tokenize_prompts_validates_parameters_first(tiny_tokenizer_dir):
    with pytest.raises(ValueError, match=r"tokenize\.max_length"):
        tokenize_prompts(pd.DataFrame(), {"max_length": 2}, {"name_or_path": "x"})
