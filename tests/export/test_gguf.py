"""GGUF export with llama.cpp's own converter and quantizer, checked by llama.cpp itself.

Both architectures the project runs: Gemma-2 (the real job) and Gemma-3 (the embedded default).
These need llama.cpp's converter (`python -m gemma_pipeline.export.llama_cpp install`) and
llama-cpp-python (the `llama-cpp` extra); CI installs both, so nothing here is skipped there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemma_pipeline.config import ExportChecksParams, ModelParams
from gemma_pipeline.export import gguf_checks
from gemma_pipeline.export.checks import check_exports
from gemma_pipeline.export.gguf import export_gguf, files_in
from gemma_pipeline.export.merged import base_plus_adapter, merge_adapter

PROMPTS = ["What is 2 + 2?", "Question: Which is a fruit?\nA. apple\nB. car\nAnswer:"]
HELDOUT = [
    (
        "<bos><start_of_turn>user\nWhat is 1 + 1?\nA. 1\nB. 2<end_of_turn>\n<start_of_turn>model\n",
        "B. 2<end_of_turn>\n",
    ),
    (
        "<bos><start_of_turn>user\nThe capital of France?\nA. Paris\nB. Rome<end_of_turn>\n"
        "<start_of_turn>model\n",
        "A. Paris<end_of_turn>\n",
    ),
]
# A random model's next-token distribution is nearly flat, so its argmax flips under any
# rounding: the top-1 bound for quantized files is set low here (the demo measures 0.94 for
# q8_0 on a trained model, docs/export.md).
CHECKS = ExportChecksParams(
    prompts=PROMPTS,
    merge_logit_tolerance=0.05,
    stop_max_tokens=16,
    quantized_min_top1_agreement=0.25,
)


@pytest.fixture(scope="module", params=["gemma2", "gemma3"])
def exported(request, make_adapter, tmp_path_factory):
    """Base → adapter → merged → GGUF files, for each architecture.

    Merged in float32: a tiny random model's top two logits are often closer than bf16's
    rounding of the merged weights (0.014 here), so its greedy continuations would part on
    rounding alone; test_merged covers the bf16 merge, the demo measures it on a real model.
    """
    base = request.getfixturevalue(f"{request.param}_dir")
    work = tmp_path_factory.mktemp(f"export-{request.param}")
    adapter = make_adapter(base, work / "adapter")
    params = ModelParams(name_or_path=str(base))
    merged = merge_adapter(params, adapter, work / "merged", dtype="float32")
    files = export_gguf(merged, f"tiny-{request.param}")
    files.save_to(work / "gguf")
    return request.param, params, adapter, merged, work / "gguf"


def test_f16_q8_0_and_q4_k_m_are_written_by_llama_cpp(exported):
    arch, _, _, _, gguf_dir = exported
    files = files_in(gguf_dir)
    assert list(files) == ["f16", "q8_0", "q4_k_m"]
    assert files["f16"].name == f"tiny-{arch}-f16.gguf"
    metadata = {
        kind: gguf_checks.open_gguf(path, n_ctx=64).metadata for kind, path in files.items()
    }
    # llama.cpp's file types: 1 = MOSTLY_F16, 7 = MOSTLY_Q8_0, 15 = MOSTLY_Q4_K_M.
    assert [m["general.file_type"] for m in metadata.values()] == ["1", "7", "15"]
    assert {m["general.architecture"] for m in metadata.values()} == {arch}


def test_every_check_passes_on_a_faithful_export(exported):
    _, params, adapter, merged, gguf_dir = exported
    reference = base_plus_adapter(params, adapter, dtype="float32")
    record = check_exports(merged, gguf_dir, reference, HELDOUT, CHECKS)
    json.dumps(record)  # the record is an artifact: plain JSON
    assert record["merge"]["passed"], record["merge"]
    files = record["gguf"]["files"]
    assert list(files) == ["f16", "q8_0", "q4_k_m"]
    for kind, result in files.items():
        assert result["tokenizer"]["passed"], (kind, result["tokenizer"])
        assert result["metadata"]["passed"], (kind, result["metadata"])
        assert result["stop"]["passed"], (kind, result["stop"])
        assert result["stop"]["forced_completion_tokens"] == 0
    f16 = files["f16"]
    assert f16["greedy"]["identical_prefix_tokens"] == [32, 32]
    assert f16["greedy"]["max_abs_logit_diff_after_prompt"] < 1e-2
    assert f16["heldout"]["perplexity_change"] == 0.0
    assert abs(files["q8_0"]["heldout"]["perplexity_change"]) <= 0.01
    assert record["passed"]


def test_the_metadata_is_what_llama_cpp_needs_for_gemma(exported):
    arch, _, _, _, gguf_dir = exported
    metadata = gguf_checks.open_gguf(files_in(gguf_dir)["f16"], n_ctx=64).metadata
    assert metadata[f"{arch}.attention.sliding_window"] == "32"
    assert metadata[f"{arch}.attention.key_length"] == "16"
    if arch == "gemma2":  # Gemma-3 has no softcaps
        assert float(metadata["gemma2.attn_logit_softcapping"]) == pytest.approx(50.0)
        assert float(metadata["gemma2.final_logit_softcapping"]) == pytest.approx(30.0)
    assert metadata["tokenizer.ggml.model"] == "llama"  # SentencePiece: scores and types
    assert metadata["tokenizer.ggml.eos_token_id"] == "1"
    assert metadata["tokenizer.chat_template"].startswith("{{ bos_token }}")


def test_a_tokenizer_config_without_added_tokens_breaks_llama_cpps_chat_markers(exported, tmp_path):
    """What the merged folder's added_tokens_decoder is for: without it (transformers 5's
    plain save) llama.cpp spells <start_of_turn> out as text, and the check says so."""
    _, _, _, merged, _ = exported
    broken = tmp_path / "merged"
    broken.mkdir()
    for item in merged.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    config = json.loads((broken / "tokenizer_config.json").read_text())
    del config["added_tokens_decoder"]
    (broken / "tokenizer_config.json").write_text(json.dumps(config))
    files = export_gguf(broken, "broken")
    files.save_to(tmp_path / "gguf")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    llm = gguf_checks.open_gguf(files_in(tmp_path / "gguf")["f16"], n_ctx=128)
    result = gguf_checks.check_tokenizer(llm, tokenizer, ["<start_of_turn>user\nhi"])
    assert not result["passed"]
    assert result["mismatches"][0]["hf"][0] == tokenizer.convert_tokens_to_ids("<start_of_turn>")


def test_a_quantized_file_below_the_agreement_bound_fails(exported):
    _, params, adapter, merged, gguf_dir = exported
    reference = base_plus_adapter(params, adapter, dtype="float32")
    strict = CHECKS.model_copy(update={"quantized_min_top1_agreement": 1.0})
    record = check_exports(merged, gguf_dir, reference, HELDOUT, strict)
    files = record["gguf"]["files"]
    assert files["f16"]["passed"]
    below = [k for k, r in files.items() if r["heldout"]["top1_agreement"] < 1.0]
    assert below and all(not files[kind]["passed"] for kind in below)
    assert not record["passed"]


def test_the_checks_fail_against_another_model(exported):
    """Greedy continuations of the base alone (no adapter) are not the merged model's."""
    _, params, _, merged, gguf_dir = exported
    from gemma_pipeline.modeling import load_causal_lm

    base = load_causal_lm(params.name_or_path, embedded_cache_dir="x", dtype="float32").eval()
    record = check_exports(merged, gguf_dir, base, HELDOUT, CHECKS)
    assert not record["merge"]["passed"]
    assert not record["passed"]


def test_a_token_that_does_not_end_generation_fails_the_stop_check(exported):
    _, _, _, _, gguf_dir = exported
    llm = gguf_checks.open_gguf(files_in(gguf_dir)["f16"], n_ctx=128)
    not_a_stop = int(llm.tokenize(b"the", add_bos=False, special=True)[0])
    result = gguf_checks.check_stop(llm, not_a_stop, "hi", max_tokens=8)
    assert result["forced_finish_reason"] == "length"
    assert result["forced_completion_tokens"] == 8
    assert not result["passed"]


def test_quantized_scores_are_compared_with_the_reference():
    logprobs = np.log(np.array([0.5, 0.25, 0.125]))
    reference = (logprobs, np.array([1, 2, 3]))
    worse = (logprobs - np.log(2.0), np.array([1, 2, 4]))
    result = gguf_checks.compare_with_reference(worse, reference)
    assert result["perplexity_change"] == pytest.approx(1.0)  # twice the perplexity
    assert result["top1_agreement"] == pytest.approx(2 / 3)
    assert result["reference_perplexity"] == pytest.approx(4.0)  # exp(mean of 1, 2, 3 ln 2)
    assert result["perplexity"] == pytest.approx(8.0)


def test_the_folder_has_an_ollama_modelfile_for_the_smallest_file(exported):
    arch, _, _, _, gguf_dir = exported
    modelfile = (gguf_dir / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./tiny-{arch}-q4_k_m.gguf\n")
    assert 'PARAMETER stop "<end_of_turn>"' in modelfile
    assert "<start_of_turn>model" in modelfile


def test_metadata_that_disagrees_with_the_model_is_named(exported, spm_tokenizer):
    arch, params, _, _, gguf_dir = exported
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(params.name_or_path)
    config.sliding_window = 4096
    llm = gguf_checks.open_gguf(files_in(gguf_dir)["f16"], n_ctx=64)
    result = gguf_checks.check_metadata(llm, config, spm_tokenizer)
    assert result["wrong"] == {f"{arch}.attention.sliding_window": {"gguf": "32", "expected": 4096}}
    assert not result["passed"]
