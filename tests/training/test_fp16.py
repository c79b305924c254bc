"""The pre-Ampere (T4) recipe's numerics, on the CPU: float32 weights, fp16 autocast, loss
scaling, RMSNorms returning float32 (``keep_norms_in_float32``), against plain float32.

CPU autocast runs the same fp16 matmuls the T4 runs under ``fp16: true`` (the rounding is the
format's; the CPU's and cuBLAS's summation orders differ). Measured on the tiny Gemma-2 (both
softcaps), one packed batch of 8 rows: loss within 2.2e-6 relative of float32, each of the 24
gradient tensors within 2.0e-3 relative (L2; median 1.4e-3), both as initialized and with the
residual stream grown to 305,000, 4.7 times fp16's 65504. Tolerances: 1e-4 and 1e-2.
"""

import copy

import pytest
import torch

from gemma_pipeline.training.data import PackingCollator
from gemma_pipeline.training.kernels import keep_norms_in_float32
from gemma_pipeline.training.trainer import selective_causal_lm_loss

FP16_MAX = torch.finfo(torch.float16).max
LOSS_SCALE = 2.0**16  # GradScaler's initial scale
LOSS_TOLERANCE = 1e-4  # relative
GRADIENT_TOLERANCE = 1e-2  # relative L2 error of each parameter's gradient


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    generator = torch.Generator().manual_seed(0)
    rows = []
    for question in range(8):
        ids = [
            tiny_tokenizer.bos_token_id,
            *(int(t) for t in torch.randint(10, len(tiny_tokenizer), (30,), generator=generator)),
            tiny_tokenizer.eos_token_id,
        ]
        rows.append(
            {"input_ids": ids, "labels": [-100] * 10 + ids[10:], "question_id": str(question)}
        )
    return PackingCollator(tiny_tokenizer.pad_token_id)(rows)


@pytest.fixture
def model(tiny_model_dir):
    from gemma_pipeline.modeling import load_causal_lm

    return load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32")


def _loss(model, batch):
    return selective_causal_lm_loss(
        model, batch["input_ids"], None, batch["labels"], position_ids=batch["position_ids"]
    )


def _loss_and_gradients(model, batch, fp16: bool):
    """One step's loss and gradients, in float32 or as fp16 mixed precision computes them."""
    with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
        loss = _loss(model, batch)
    scale = LOSS_SCALE if fp16 else 1.0
    gradients = torch.autograd.grad(loss * scale, list(model.parameters()))
    return loss.float(), [gradient.float() / scale for gradient in gradients]


def _scale_post_norms(model, gain: float) -> None:
    """Gemma-2's post-attention/feed-forward norms scale each block's output before it joins the
    residual stream; a large gain grows that stream the way deep real checkpoints do."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.post_attention_layernorm.weight.fill_(gain - 1)  # Gemma scales by 1 + weight
            layer.post_feedforward_layernorm.weight.fill_(gain - 1)


def _residual_peak(model, batch) -> float:
    with torch.no_grad():
        out = model.model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            output_hidden_states=True,
        )
    return max(hidden.abs().max().item() for hidden in out.hidden_states[:-1])  # before the norm


def _assert_fp16_matches_float32(model, batch):
    expected_loss, expected = _loss_and_gradients(model, batch, fp16=False)
    loss, gradients = _loss_and_gradients(model, batch, fp16=True)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(gradient).all() for gradient in gradients)
    assert abs(loss - expected_loss) / expected_loss < LOSS_TOLERANCE
    compared = 0
    for got, want in zip(gradients, expected, strict=True):
        if want.norm() > 0:
            assert (got - want).norm() / want.norm() < GRADIENT_TOLERANCE
            compared += 1
    assert compared >= 20  # embeddings, norms and every projection of both layers


@pytest.mark.parametrize("gain", [1.0, 5e4], ids=["as-initialized", "residual-past-fp16"])
def test_fp16_loss_and_gradients_match_float32(model, batch, gain):
    _scale_post_norms(model, gain)
    if gain > 1:
        assert _residual_peak(model, batch) > 3 * FP16_MAX
    assert keep_norms_in_float32(model) == 9  # 4 per layer and the final one
    _assert_fp16_matches_float32(model, batch)


def test_without_float32_weights_and_norms_fp16_overflows(model, batch):
    """The same model in fp16 weights, or with its norms handing back fp16, loses the loss."""
    _scale_post_norms(model, 5e4)
    with torch.no_grad():
        assert not torch.isfinite(_loss(copy.deepcopy(model).half(), batch))
    with torch.autocast("cpu", dtype=torch.float16), torch.no_grad():
        assert not torch.isfinite(_loss(model, batch))
