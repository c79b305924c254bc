"""The capability check: what a T4 (7.5), an A100 (8.0), an H200 (9.0) and the CPU train with,
explicit parameters winning, and contradictions refused before any model loads."""

import pytest
import torch

from gemma_pipeline.config import ModelParams, ParameterError, TrainQloraParams, parse_params
from gemma_pipeline.modeling import capability
from gemma_pipeline.modeling.capability import (
    CAPABILITY_OVERRIDE,
    Device,
    choose_training_setup,
    probe_device,
)

T4 = Device("cuda", "Tesla T4", (7, 5), bf16=False)
A100 = Device("cuda", "NVIDIA A100-SXM4-40GB", (8, 0), bf16=True)
H200 = Device("cuda", "NVIDIA H200", (9, 0), bf16=True)
CPU = Device("cpu", "CPU")
MODEL = ModelParams(name_or_path="google/gemma-2-2b-it")


def _choose(device, model=MODEL, **overrides):
    return choose_training_setup(TrainQloraParams.model_validate(overrides), model, device)


@pytest.mark.parametrize(
    "device, bf16, fp16, compute_dtype, weights, attention, fused",
    [
        (T4, False, True, "float16", "float32", "eager", False),
        (A100, True, False, "bfloat16", "bfloat16", "flex_attention", True),
        (H200, True, False, "bfloat16", "bfloat16", "flex_attention", True),
        (CPU, False, False, "bfloat16", "bfloat16", "eager", False),
    ],
    ids=["7.5", "8.0", "9.0", "cpu"],
)
def test_the_defaults_resolve_by_device(
    device, bf16, fp16, compute_dtype, weights, attention, fused
):
    chosen = _choose(device)
    assert (chosen.params.bf16, chosen.params.fp16) == (bf16, fp16)
    assert chosen.params.quantization.compute_dtype == compute_dtype
    assert chosen.model_params.dtype == weights
    assert chosen.model_params.attn_implementation == attention
    assert chosen.flex_attention == (attention == "flex_attention")
    assert chosen.fused_kernels is fused
    assert not (chosen.params.bf16 and chosen.params.fp16)


def test_the_choice_and_its_reason_are_logged(caplog):
    with caplog.at_level("INFO", logger=capability.__name__):
        _choose(T4)
    line = caplog.text
    assert "Tesla T4 (compute capability 7.5)" in line
    assert "fp16" in line and "no bf16 tensor cores" in line
    assert "eager attention" in line and "no Liger" in line


def test_the_padded_recipe_keeps_the_model_sections_attention():
    chosen = _choose(T4, recipe="padded", per_device_train_batch_size=4)
    assert chosen.model_params.attn_implementation == MODEL.attn_implementation == "eager"
    assert not chosen.flex_attention and not chosen.fused_kernels


@pytest.mark.parametrize(
    "device, overrides, expected",
    [
        # fp16 chosen on an H200: bf16 (auto) steps aside, the 4-bit compute follows fp16.
        (H200, {"fp16": True}, (False, True, "float16", "float32")),
        (H200, {"bf16": False}, (False, False, "bfloat16", "bfloat16")),
        # fp32 training on a T4, and a float32 4-bit compute dtype: both allowed.
        (T4, {"fp16": False}, (False, False, "float16", "bfloat16")),
        (T4, {"quantization": {"compute_dtype": "float32"}}, (False, True, "float32", "float32")),
    ],
    ids=["fp16-on-h200", "no-bf16-on-h200", "no-fp16-on-t4", "float32-compute-on-t4"],
)
def test_explicit_parameters_win(device, overrides, expected):
    chosen = _choose(device, **overrides)
    got = (
        chosen.params.bf16,
        chosen.params.fp16,
        chosen.params.quantization.compute_dtype,
        chosen.model_params.dtype,
    )
    assert got == expected


@pytest.mark.parametrize(
    "device, overrides, key",
    [
        (T4, {"bf16": True}, "train_qlora.bf16"),
        (T4, {"quantization": {"compute_dtype": "bfloat16"}}, "train_qlora.quantization"),
        (CPU, {"bf16": True}, "train_qlora.bf16"),
        (CPU, {"fp16": True}, "train_qlora.fp16"),
    ],
    ids=["bf16-on-t4", "bf16-compute-on-t4", "bf16-on-cpu", "fp16-on-cpu"],
)
def test_a_contradiction_names_the_key_and_the_device(device, overrides, key):
    with pytest.raises(ParameterError) as error:
        _choose(device, **overrides)
    assert key in str(error.value) and device.label in str(error.value)


def test_bf16_compute_without_4bit_is_no_contradiction():
    chosen = _choose(T4, quantization={"load_in_4bit": False, "compute_dtype": "bfloat16"})
    assert chosen.params.fp16 is True


def test_bf16_and_fp16_both_true_fail_validation():
    with pytest.raises(ParameterError, match="bf16 and fp16 are both true"):
        parse_params(TrainQloraParams, {"bf16": True, "fp16": True}, "train_qlora")


def test_a_contradiction_fails_before_the_model_loads(tmp_path, monkeypatch):
    from datasets import Dataset

    from gemma_pipeline.training import run

    loaded = []
    monkeypatch.setattr(run, "probe_device", lambda: T4)
    monkeypatch.setattr(run, "model_from_params", lambda *args: loaded.append(args))
    monkeypatch.setattr(run, "tokenizer_from_params", lambda *args: loaded.append(args))
    params = TrainQloraParams(bf16=True, checkpoint_dir=str(tmp_path))
    rows = Dataset.from_list([{"input_ids": [2, 5], "question_id": "q", "task": "mmlu"}])
    with pytest.raises(ParameterError, match=r"train_qlora\.bf16"):
        run.build_trainer(rows, params, MODEL)
    assert loaded == []


def _cuda(monkeypatch, capability_, name, bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability_)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
    # Without emulation: torch says True on a T4 when emulation counts.
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: bf16 or including_emulation,
    )


@pytest.mark.parametrize(
    "capability_, name, bf16, ampere",
    [
        ((7, 5), "Tesla T4", False, False),
        ((8, 0), "A100", True, True),
        ((9, 0), "H200", True, True),
    ],
)
def test_probe_reads_the_device(monkeypatch, capability_, name, bf16, ampere):
    monkeypatch.delenv(CAPABILITY_OVERRIDE, raising=False)
    _cuda(monkeypatch, capability_, name, bf16)
    device = probe_device()
    assert (device.kind, device.capability, device.bf16) == ("cuda", capability_, bf16)
    assert device.ampere_or_newer is ampere


def test_probe_without_cuda_is_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert probe_device() == CPU


def test_the_override_makes_an_h200_choose_as_a_t4(monkeypatch):
    _cuda(monkeypatch, (9, 0), "NVIDIA H200", True)
    monkeypatch.setenv(CAPABILITY_OVERRIDE, "7.5")
    device = probe_device()
    assert device.capability == (7, 5) and not device.bf16
    assert CAPABILITY_OVERRIDE in device.label
    chosen = choose_training_setup(TrainQloraParams(), MODEL, device)
    assert chosen.params.fp16 and chosen.model_params.attn_implementation == "eager"


def test_a_malformed_override_is_refused(monkeypatch):
    _cuda(monkeypatch, (9, 0), "NVIDIA H200", True)
    monkeypatch.setenv(CAPABILITY_OVERRIDE, "turing")
    with pytest.raises(ValueError, match=CAPABILITY_OVERRIDE):
        probe_device()
