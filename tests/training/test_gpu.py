"""The CUDA recipe: 4-bit NF4 with double quantization, bf16 compute, gradient checkpointing,
paged 8-bit AdamW; and the pre-Ampere one (a T4's, forced with GEMMA_PIPELINE_DEVICE_CAPABILITY):
fp16 with loss scaling, float16 compute, float32 adapters. Runs where CUDA is (the lent GPU
machine); skipped on CPU-only CI."""

import pytest
import torch

from gemma_pipeline.config import ModelParams, TrainQloraParams
from gemma_pipeline.modeling.capability import CAPABILITY_OVERRIDE
from gemma_pipeline.training import run as run_module
from gemma_pipeline.training.run import train_adapter

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("forced_capability", [None, "7.5"], ids=["native", "pre-ampere"])
def test_cuda_recipe_trains_a_4bit_model(
    tmp_path, tiny_model_dir, tiny_tokenizer, monkeypatch, forced_capability
):
    from bitsandbytes.nn import Linear4bit
    from datasets import Dataset

    generator = torch.Generator().manual_seed(0)
    letter = tiny_tokenizer.convert_tokens_to_ids("B")
    rows = []
    for question in range(8):
        prompt = [tiny_tokenizer.bos_token_id, *torch.randint(10, 600, (20,), generator=generator)]
        ids = [int(t) for t in prompt] + [letter, tiny_tokenizer.eos_token_id]
        rows.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": [-100] * len(prompt) + ids[len(prompt) :],
                "prompt_length": len(prompt),
                "question_id": f"q{question}",
            }
        )
    if forced_capability:
        monkeypatch.setenv(CAPABILITY_OVERRIDE, forced_capability)
    else:
        monkeypatch.delenv(CAPABILITY_OVERRIDE, raising=False)
    params = TrainQloraParams.model_validate(
        {
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 2,
            "max_steps": 8,
            "learning_rate": 1e-2,
            "logging_steps": 1,
            "save_steps": 4,
            "checkpoint_dir": str(tmp_path / "checkpoints"),
        }
    )
    seen = {}
    original = run_module.QLoRASFTTrainer.create_optimizer

    def spy_optimizer(self, *args, **kwargs):
        optimizer = original(self, *args, **kwargs)
        seen["optimizer_module"] = type(self.optimizer).__module__
        seen["optim"] = str(self.args.optim)
        seen["paged"] = getattr(self.optimizer, "is_paged", None)
        seen["quantized"] = any(isinstance(m, Linear4bit) for m in self.model.modules())
        seen["checkpointing"] = self.model.is_gradient_checkpointing
        seen["bf16"], seen["fp16"] = self.args.bf16, self.args.fp16
        seen["scaler"] = self.accelerator.scaler is not None
        seen["adapter_dtypes"] = {p.dtype for p in self.model.parameters() if p.requires_grad}
        return optimizer

    monkeypatch.setattr(run_module.QLoRASFTTrainer, "create_optimizer", spy_optimizer)
    adapter, history = train_adapter(
        Dataset.from_list(rows), params, ModelParams(name_or_path=str(tiny_model_dir))
    )
    quantization = history["setup"]["quantization"]
    assert history["setup"]["device"] == "cuda"
    assert quantization["bnb_4bit_quant_type"] == "nf4"
    assert quantization["bnb_4bit_use_double_quant"] is True
    assert seen["quantized"] and seen["checkpointing"]
    if forced_capability:
        assert quantization["bnb_4bit_compute_dtype"] == "float16"
        assert seen["fp16"] and not seen["bf16"] and seen["scaler"]
        assert seen["adapter_dtypes"] == {torch.float32}
        assert history["setup"]["attention"] == "eager"
        assert history["setup"]["fused_kernels"] is False
    else:
        assert quantization["bnb_4bit_compute_dtype"] == "bfloat16"
        assert seen["bf16"] and not seen["fp16"]
    assert seen["optimizer_module"].startswith("bitsandbytes"), seen
    assert "paged_adamw_8bit" in seen["optim"].lower() and seen["paged"] is True, seen
    losses = [entry["loss"] for entry in history["log_history"] if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert next(adapter.parameters()).is_cuda
