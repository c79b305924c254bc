"""What the training tests share: tiny tokenized rows and small training parameters."""

import pytest
import torch
from datasets import Dataset

from gemma_pipeline.config import TrainQloraParams


def tiny_rows(tokenizer, n_questions=8, rotations=4, seed=0):
    """Prompts of random tokens; every completion starts with the letter B."""
    generator = torch.Generator().manual_seed(seed)
    letters = [tokenizer.convert_tokens_to_ids(letter) for letter in "ABCD"]
    low, high = 10, len(tokenizer)
    rows = []
    for question in range(n_questions):
        for _rotation in range(rotations):
            prompt = [tokenizer.bos_token_id, *torch.randint(low, high, (10,), generator=generator)]
            letter = letters[1]
            completion = [letter, letters[0], tokenizer.eos_token_id]
            ids = [int(t) for t in prompt] + completion
            rows.append(
                {
                    "input_ids": ids,
                    "attention_mask": [1] * len(ids),
                    "labels": [-100] * len(prompt) + completion,
                    "prompt_length": len(prompt),
                    "question_id": f"q{question}",
                }
            )
    return Dataset.from_list(rows)


def small_params(tmp_path, **overrides):
    values = dict(
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        max_steps=6,
        save_steps=2,
        logging_steps=1,
        learning_rate=5e-3,
        checkpoint_dir=str(tmp_path / "checkpoints"),
        quantization={"load_in_4bit": False},
        lora={"r": 4, "alpha": 8, "dropout": 0.1},
        gradient_checkpointing=False,
    )
    values.update(overrides)
    return TrainQloraParams.model_validate(values)


@pytest.fixture(scope="session")
def make_rows():
    """``make_rows(tokenizer, n_questions=8, rotations=4, seed=0)``: see ``tiny_rows``."""
    return tiny_rows


@pytest.fixture(scope="session")
def make_params():
    """``make_params(tmp_path, **overrides)``: see ``small_params``."""
    return small_params
