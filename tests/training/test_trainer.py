import pytest
import torch
from datasets import Dataset, load_from_disk
from safetensors.torch import load_file

from gemma_pipeline.config import ModelParams
from gemma_pipeline.modeling import load_causal_lm
from gemma_pipeline.training.data import CompletionCollator, GroupShuffleSampler
from gemma_pipeline.training.run import build_trainer, train_adapter
from gemma_pipeline.training.trainer import QLoRASFTTrainer, selective_causal_lm_loss


def test_selective_loss_and_gradients_match_the_plain_padded_forward(
    tiny_model_dir, tiny_tokenizer, make_rows
):
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32")
    batch = CompletionCollator(tiny_tokenizer.pad_token_id)(
        make_rows(tiny_tokenizer, 2, 2).to_list()
    )

    plain = model(**batch).loss
    plain_grads = torch.autograd.grad(plain, [p for p in model.parameters()], allow_unused=True)
    selective = selective_causal_lm_loss(
        model, batch["input_ids"], batch["attention_mask"], batch["labels"]
    )
    selective_grads = torch.autograd.grad(
        selective, [p for p in model.parameters()], allow_unused=True
    )

    assert selective.item() == pytest.approx(plain.item(), rel=1e-5)
    for expected, got in zip(plain_grads, selective_grads, strict=True):
        if expected is not None:
            assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_answer_letter_collation_keeps_only_the_letter_label(tiny_tokenizer, make_rows):
    rows = make_rows(tiny_tokenizer, 1, 2).to_list()
    batch = CompletionCollator(tiny_tokenizer.pad_token_id, loss_on="answer_letter")(rows)
    assert batch["input_ids"].shape == (2, 12)  # prompt (11) + the letter
    labelled = (batch["labels"] != -100).nonzero().tolist()
    assert labelled == [[0, 11], [1, 11]]
    assert batch["labels"][0, 11] == rows[0]["input_ids"][11]


def test_group_sampler_keeps_rotations_together_and_is_deterministic():
    groups = [f"q{i // 4}" for i in range(40)]
    sampler = GroupShuffleSampler(groups, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(40))
    assert all(len({groups[i] for i in order[k : k + 4]}) == 1 for k in range(0, 40, 4))
    assert order == list(GroupShuffleSampler(groups, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_training_lowers_the_loss(tmp_path, tiny_model_dir, tiny_tokenizer, make_rows, make_params):
    data = make_rows(tiny_tokenizer, n_questions=4)
    params = make_params(tmp_path, max_steps=20, learning_rate=2e-2, loss_on="answer_letter")
    adapter, history = train_adapter(data, params, ModelParams(name_or_path=str(tiny_model_dir)))
    losses = [entry["loss"] for entry in history["log_history"] if "loss" in entry]
    assert len(losses) == 20
    # A random 2-layer model with frozen embeddings cannot go far, but it must go down.
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3
    # LoRA trains r × (in + out) weights on every targeted projection, nothing else.
    base = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x")
    lora_weights = sum(
        params.lora.r * (module.in_features + module.out_features)
        for name, module in base.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name.rsplit(".", 1)[-1] in params.lora.target_modules
    )
    assert history["trainable_parameters"] == lora_weights
    assert adapter.peft_config["default"].r == params.lora.r


def test_a_killed_run_resumes_to_the_same_adapter(
    tmp_path, tiny_model_dir, tiny_tokenizer, monkeypatch, make_rows, make_params
):
    data = make_rows(tiny_tokenizer)
    model_params = ModelParams(name_or_path=str(tiny_model_dir))
    uninterrupted, _ = train_adapter(data, make_params(tmp_path / "a"), model_params)
    uninterrupted.save_pretrained(tmp_path / "full")

    original_step = QLoRASFTTrainer.training_step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # killed during step 4: the step-2 checkpoint is the last one
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(QLoRASFTTrainer, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_adapter(data, make_params(tmp_path / "b"), model_params)
    monkeypatch.setattr(QLoRASFTTrainer, "training_step", original_step)

    resumed, history = train_adapter(data, make_params(tmp_path / "b", resume=True), model_params)
    assert history["resumed_from"].endswith("checkpoint-2")
    resumed.save_pretrained(tmp_path / "resumed")

    expected = load_file(tmp_path / "full" / "adapter_model.safetensors")
    got = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_tasks_selects_the_training_rows(
    tmp_path, tiny_model_dir, tiny_tokenizer, make_rows, make_params
):
    rows = make_rows(tiny_tokenizer, n_questions=4).to_list()
    for index, row in enumerate(rows):
        row["task"] = "mmlu" if index < 8 else "mathqa"
    data = Dataset.from_list(rows)
    params = make_params(tmp_path, max_steps=1, tasks=["mmlu"])
    _, history = train_adapter(data, params, ModelParams(name_or_path=str(tiny_model_dir)))
    assert history["train_rows"] == 8
    with pytest.raises(ValueError, match="selects no training rows"):
        train_adapter(
            data.filter(lambda row: row["task"] == "mathqa"),
            params,
            ModelParams(name_or_path=str(tiny_model_dir)),
        )


def test_selecting_tasks_writes_nothing_into_the_tokenized_artifact(
    tmp_path, tiny_model_dir, tiny_tokenizer, make_rows, make_params
):
    # The tokenized artifact is loaded from disk; datasets' filter used to leave a
    # cache-<hash>.arrow in its folder, on every run and on every data-parallel process.
    rows = make_rows(tiny_tokenizer, n_questions=4).to_list()
    for index, row in enumerate(rows):
        row["task"] = "mmlu" if index < 8 else "mathqa"
    Dataset.from_list(rows).save_to_disk(tmp_path / "tokenized")
    before = sorted(path.name for path in (tmp_path / "tokenized").iterdir())
    _, setup = build_trainer(
        load_from_disk(tmp_path / "tokenized"),
        make_params(tmp_path, tasks=["mmlu"]),
        ModelParams(name_or_path=str(tiny_model_dir)),
    )
    assert setup["train_rows"] == 8
    assert sorted(path.name for path in (tmp_path / "tokenized").iterdir()) == before
