import logging

import pandas as pd
import pytest

from gemma_pipeline.pipelines.tokenize.nodes import tokenize_prompts


def _prompt(tokenizer, text: str) -> str:
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


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
