"""The packed recipe computes the padded recipe's loss and gradients, faster: rows joined without
padding, attention kept inside each row, logits only at the labelled positions."""

from itertools import chain
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset

from gemma_pipeline.config import ModelParams, ParameterError, TrainQloraParams, parse_params
from gemma_pipeline.modeling import load_causal_lm
from gemma_pipeline.prompting import IGNORE_INDEX
from gemma_pipeline.training.data import (
    CompletionCollator,
    PackingCollator,
    real_token_count,
)
from gemma_pipeline.training.recipe import PADDED_PAD_TO, micro_batching
from gemma_pipeline.training.run import build_trainer
from gemma_pipeline.training.trainer import selective_causal_lm_loss

PAD = 0  # the tiny tokenizer's <pad>


def _rows(tokenizer, lengths, completion_length=3, seed=0):
    """Rows of random prompt tokens of the given lengths (BOS included) and short completions."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index, length in enumerate(lengths):
        prompt = [
            tokenizer.bos_token_id,
            *torch.randint(10, len(tokenizer), (length - 1,), generator=generator).tolist(),
        ]
        completion = torch.randint(
            10, len(tokenizer), (completion_length,), generator=generator
        ).tolist()
        ids = prompt + completion
        rows.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": [IGNORE_INDEX] * len(prompt) + completion,
                "prompt_length": len(prompt),
                "question_id": f"q{index}",
                "task": "mmlu",
            }
        )
    return rows


def test_packing_joins_rows_without_padding_and_restarts_positions(tiny_tokenizer):
    rows = _rows(tiny_tokenizer, [5, 9, 3], completion_length=2)  # 7, 11 and 5 tokens
    batch = PackingCollator(PAD)(rows)

    assert set(batch) == {"input_ids", "position_ids", "labels"}  # no mask: positions rule
    order = [rows[1], rows[0], rows[2]]  # longest first
    assert batch["input_ids"].tolist() == [list(chain(*(row["input_ids"] for row in order)))]
    assert batch["position_ids"].tolist() == [[*range(11), *range(7), *range(5)]]
    labels = batch["labels"][0].tolist()
    assert labels == list(chain(*(row["labels"] for row in order)))
    # No row's first token is a target: the previous row's last token never predicts it.
    for start in (0, 11, 18):
        assert labels[start] == IGNORE_INDEX
    assert real_token_count(batch, PAD) == 23


def test_packing_fills_short_rows_and_pads_the_rest_as_a_block_of_its_own(tiny_tokenizer):
    rows = _rows(tiny_tokenizer, [5, 9, 3], completion_length=2)  # 7, 11 and 5 tokens
    batch = PackingCollator(PAD, row_tokens=16)(rows)

    # 11 + 5 fill the first packed row; 7 waits in the second, padded to 16.
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0].tolist() == rows[1]["input_ids"] + rows[2]["input_ids"]
    assert batch["position_ids"][1].tolist() == [*range(7), *range(9)]
    assert batch["input_ids"][1, 7:].eq(PAD).all() and batch["labels"][1, 7:].eq(-100).all()
    assert real_token_count(batch, PAD) == 23


def test_packing_keeps_only_the_answer_letter_when_asked(tiny_tokenizer):
    rows = _rows(tiny_tokenizer, [5, 9], completion_length=3)
    batch = PackingCollator(PAD, loss_on="answer_letter")(rows)
    assert batch["position_ids"].tolist() == [[*range(10), *range(6)]]
    labelled = (batch["labels"][0] != IGNORE_INDEX).nonzero().flatten().tolist()
    assert labelled == [9, 15]
    assert batch["labels"][0, 15] == rows[0]["input_ids"][5]


def test_padded_collation_pads_every_row_to_512(tiny_tokenizer):
    batch = CompletionCollator(tiny_tokenizer.pad_token_id, pad_to=PADDED_PAD_TO)(
        _rows(tiny_tokenizer, [5, 9])
    )
    assert batch["input_ids"].shape == (2, 512)
    assert real_token_count(batch, PAD) == 8 + 12


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).norm() / expected.norm().clamp(min=1e-12))


def test_packed_loss_and_gradients_match_the_plain_padded_eager_forward(
    tiny_model_dir, tiny_tokenizer
):
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32")
    assert model.config.attn_logit_softcapping and model.config.final_logit_softcapping
    # Rows longer than the tiny model's sliding window (32) exercise it inside packed rows.
    rows = _rows(tiny_tokenizer, [40, 7, 25, 50, 3], completion_length=4)
    padded = CompletionCollator(tiny_tokenizer.pad_token_id, pad_to=64)(rows)
    # Packed rows of 64: several of them, one with a padded tail.
    packed = PackingCollator(PAD, row_tokens=64)(rows)
    assert packed["input_ids"].shape[0] > 1 and packed["input_ids"].eq(PAD).any()
    parameters = [p for p in model.parameters() if p.requires_grad]

    plain = model(**padded, use_cache=False).loss  # full logits, padded eager: the reference
    plain_grads = torch.autograd.grad(plain, parameters)
    fast = selective_causal_lm_loss(
        model, packed["input_ids"], None, packed["labels"], position_ids=packed["position_ids"]
    )
    fast_grads = torch.autograd.grad(fast, parameters)

    assert abs(fast.item() - plain.item()) <= 1e-3 * abs(plain.item())
    for expected, got in zip(plain_grads, fast_grads, strict=True):
        assert _relative_error(got, expected) <= 1e-3


def test_packed_rows_do_not_see_each_other(tiny_model_dir, tiny_tokenizer):
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32")
    first, second = _rows(tiny_tokenizer, [12, 10])
    other_first = _rows(tiny_tokenizer, [12], seed=1)[0]

    def second_row_logits(rows):
        batch = PackingCollator(PAD)(rows)
        # Without a cache, as in training: transformers reads packed rows from position_ids only
        # when there is neither an attention mask nor a cache.
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        return logits[0, -len(second["input_ids"]) :]

    torch.testing.assert_close(
        second_row_logits([first, second]), second_row_logits([other_first, second])
    )


def _params(tmp_path, **overrides):
    values = dict(
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        max_steps=1,
        checkpoint_dir=str(tmp_path / "checkpoints"),
        quantization={"load_in_4bit": False},
        gradient_checkpointing=False,
    )
    values.update(overrides)
    return TrainQloraParams.model_validate(values)


def test_the_padded_recipe_is_one_parameter_away(tmp_path):
    packed, padded = _params(tmp_path), _params(tmp_path, recipe="padded")
    assert packed.recipe == "packed"  # the default
    assert micro_batching(packed) == (8, 1)
    assert micro_batching(padded) == (4, 2)  # same 8 examples per optimizer step
    with pytest.raises(ParameterError, match="multiple of 4"):
        parse_params(
            TrainQloraParams, {"recipe": "padded", "per_device_train_batch_size": 6}, "train_qlora"
        )


def test_a_config_with_the_old_recipe_name_fails_naming_the_key():
    """``recipe: seed`` (the padded recipe's old name) in an otherwise valid conf/base."""
    conf = Path(__file__).resolve().parents[2] / "conf/base/parameters_train_qlora.yml"
    section = yaml.safe_load(conf.read_text())["train_qlora"]
    with pytest.raises(ParameterError) as error:
        parse_params(TrainQloraParams, section | {"recipe": "seed"}, "train_qlora")
    problems = str(error.value).splitlines()[1:]
    assert len(problems) == 1 and problems[0].startswith("  train_qlora.recipe: ")
    assert "'packed'" in problems[0] and "'padded'" in problems[0]


def test_both_recipes_give_the_trainer_the_same_loss(tmp_path, tiny_model_dir, tiny_tokenizer):
    rows = _rows(tiny_tokenizer, [40, 7, 25, 50, 3, 9, 30, 12], completion_length=4)
    data = Dataset.from_list(rows)
    model_params = ModelParams(name_or_path=str(tiny_model_dir), dtype="float32")
    losses = {}
    for recipe in ("padded", "packed"):
        trainer, setup = build_trainer(data, _params(tmp_path, recipe=recipe), model_params)
        assert setup["setup"]["attention"] == "eager"  # keeps Gemma-2's attention softcap
        collator = trainer.data_collator
        assert isinstance(collator, PackingCollator if recipe == "packed" else CompletionCollator)
        micro_batch = trainer.args.per_device_train_batch_size
        total = 0.0
        for start in range(0, len(rows), micro_batch):
            batch = collator(rows[start : start + micro_batch])
            with torch.no_grad():
                total += trainer.compute_loss(trainer.model, batch, num_items_in_batch=32).item()
        losses[recipe] = total
    assert losses["packed"] == pytest.approx(losses["padded"], rel=1e-4)


def test_packed_width_rounds_up_to_whole_blocks():
    from gemma_pipeline.training.data import PackingCollator

    rows = [
        {"input_ids": [2, 5, 6, 7], "labels": [-100, -100, 6, 7], "prompt_length": 2},
        {"input_ids": [2, 8, 9], "labels": [-100, -100, 9], "prompt_length": 2},
    ]
    plain = PackingCollator(0)(rows)
    blocks = PackingCollator(0, width_multiple=128)(rows)
    assert plain["input_ids"].shape[1] == 7 and blocks["input_ids"].shape[1] == 128
    # The tail is padding in a block of its own: no labels, positions restarting at 0.
    assert (blocks["labels"][0, 7:] == -100).all()
    assert blocks["position_ids"][0, 7:].tolist() == list(range(121))
    assert blocks["input_ids"][0, :7].tolist() == plain["input_ids"][0].tolist()
