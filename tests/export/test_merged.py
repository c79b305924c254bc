"""The merged folder: loadable with nothing else, and equal to base + adapter."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from gemma_pipeline.config import ModelParams
from gemma_pipeline.export.merged import SENTENCEPIECE_FILE, check_merged, merge_adapter
from gemma_pipeline.modeling import load_causal_lm

PROMPTS = ["the cat is", "What is the answer? A. 1 B. 2"]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory, make_adapter):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"))


def _base_plus_adapter(tiny_model_dir, adapter_dir, dtype):
    base = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype=dtype)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def test_merged_folder_loads_alone_and_equals_base_plus_adapter(
    tiny_model_dir, adapter_dir, tmp_path
):
    params = ModelParams(name_or_path=str(tiny_model_dir), dtype="float32")
    folder = merge_adapter(params, adapter_dir, tmp_path / "merged", dtype="float32")
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("adapter_*"))  # a plain model, not an adapter

    # Plain transformers, nothing of the project: model, tokenizer and chat template.
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<start_of_turn>model\n")
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in model.generation_config.eos_token_id

    reference = _base_plus_adapter(tiny_model_dir, adapter_dir, "float32")
    check, merged_did = check_merged(folder, reference, PROMPTS, tolerance=1e-4)
    assert check.passed, check
    assert check.prompts == 2 and check.greedy_tokens == 32
    assert [len(reference.continuation) for reference in merged_did] == [32, 32]

    # The adapter really moved the weights: the base alone is not within the tolerance.
    base = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32").eval()
    assert not check_merged(folder, base, PROMPTS, tolerance=1e-4)[0].passed


def test_merging_in_bfloat16_stays_close_to_base_plus_adapter(
    tiny_model_dir, adapter_dir, tmp_path
):
    params = ModelParams(name_or_path=str(tiny_model_dir))
    folder = merge_adapter(params, adapter_dir, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(folder)
    assert merged.dtype == torch.bfloat16
    reference = _base_plus_adapter(tiny_model_dir, adapter_dir, "bfloat16")
    # bf16 rounds the merged weights once more than W x + B A x does: measured 0.013 here.
    check, _ = check_merged(folder, reference, PROMPTS, tolerance=0.05)
    assert check.passed, check


def test_the_base_sentencepiece_model_is_copied(tiny_model_dir, adapter_dir, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    for item in tiny_model_dir.iterdir():
        (base / item.name).write_bytes(item.read_bytes())
    (base / SENTENCEPIECE_FILE).write_bytes(b"sentencepiece model bytes")
    params = ModelParams(name_or_path=str(base), dtype="float32")
    folder = merge_adapter(params, adapter_dir, tmp_path / "merged", dtype="float32")
    assert (folder / SENTENCEPIECE_FILE).read_bytes() == b"sentencepiece model bytes"
