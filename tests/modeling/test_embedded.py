"""The embedded model cache: completeness marker, atomic publishing, and (slow) real conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, Gemma3ForCausalLM

from gemma_pipeline.modeling import embedded
from gemma_pipeline.modeling.chat_template import GEMMA_CHAT_TEMPLATE
from gemma_pipeline.modeling.loading import load_causal_lm, load_tokenizer


def _fake_assemble(output_path: str | Path) -> Path:
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


def _fake_convert(gguf_path: Path, output_dir: Path) -> embedded.Verification:
    output_dir.mkdir(parents=True)
    (output_dir / "config.json").write_text("{}")
    return embedded.Verification(max_abs_logit_diff=0.0, prompt_loss=2.5)


@pytest.fixture
def fake_conversion(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Swap the 70-second conversion for a stub that records each call."""
    calls: list[Path] = []

    def convert(gguf_path: Path, output_dir: Path) -> embedded.Verification:
        calls.append(output_dir)
        return _fake_convert(gguf_path, output_dir)

    monkeypatch.setattr(embedded.gguf_package, "assemble", _fake_assemble)
    monkeypatch.setattr(embedded, "convert_gguf_to_hf", convert)
    return calls


def _dead_pid() -> int:
    """Id of a process that has exited."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


def test_conversion_publishes_a_complete_folder_once(
    fake_conversion: list[Path], tmp_path: Path
) -> None:
    folder = embedded.ensure_embedded_model(tmp_path)
    assert folder == tmp_path / embedded.EMBEDDED_FOLDER_NAME
    assert (folder / "config.json").exists()
    assert embedded.is_complete(folder)
    marker = embedded.read_marker(folder)
    assert marker is not None
    assert marker["gguf_sha256"] == embedded.gguf_package.EXPECTED_SHA256
    # Only the published folder remains: build folder and assembled GGUF are gone.
    assert [path.name for path in tmp_path.iterdir()] == [embedded.EMBEDDED_FOLDER_NAME]

    assert embedded.ensure_embedded_model(tmp_path) == folder
    assert len(fake_conversion) == 1


def test_failed_conversion_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken_convert(gguf_path: Path, output_dir: Path) -> embedded.Verification:
        _fake_convert(gguf_path, output_dir)
        raise RuntimeError("logits do not match")

    monkeypatch.setattr(embedded.gguf_package, "assemble", _fake_assemble)
    monkeypatch.setattr(embedded, "convert_gguf_to_hf", broken_convert)
    with pytest.raises(RuntimeError, match="logits do not match"):
        embedded.ensure_embedded_model(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_or_stale_folder_is_rebuilt(fake_conversion: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / embedded.EMBEDDED_FOLDER_NAME
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"half written")
    stale = {"gguf_sha256": "0" * 64, "conversion_version": embedded.CONVERSION_VERSION}
    (folder / embedded.MARKER_FILE_NAME).write_text(json.dumps(stale))
    assert not embedded.is_complete(folder)

    assert embedded.ensure_embedded_model(tmp_path) == folder
    assert embedded.is_complete(folder)
    assert not (folder / "model.safetensors").exists()
    assert len(fake_conversion) == 1


def test_abandoned_builds_are_removed_but_live_ones_kept(
    fake_conversion: list[Path], tmp_path: Path
) -> None:
    abandoned = tmp_path / f".{embedded.EMBEDDED_FOLDER_NAME}.build-{_dead_pid()}-x"
    live = tmp_path / f".{embedded.EMBEDDED_FOLDER_NAME}.build-{os.getpid()}-y"
    abandoned.mkdir()
    live.mkdir()
    embedded.ensure_embedded_model(tmp_path)
    assert not abandoned.exists()
    assert live.exists()


def test_unreadable_marker_means_incomplete(tmp_path: Path) -> None:
    (tmp_path / embedded.MARKER_FILE_NAME).write_text("{not json")
    assert embedded.read_marker(tmp_path) is None
    assert not embedded.is_complete(tmp_path)


@pytest.mark.slow
def test_real_embedded_conversion(tmp_path: Path) -> None:
    started = time.perf_counter()
    folder = embedded.ensure_embedded_model(tmp_path)
    first_seconds = time.perf_counter() - started

    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (folder / name).is_file(), name
    marker = embedded.read_marker(folder)
    assert marker is not None
    assert marker["max_abs_logit_diff"] <= embedded.LOGIT_TOLERANCE
    assert marker["prompt_loss"] <= embedded.MAX_PROMPT_LOSS

    model = Gemma3ForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.generation_config.eos_token_id == [1, 106]

    tokenizer: Any = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == GEMMA_CHAT_TEMPLATE
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"

    started = time.perf_counter()
    assert embedded.ensure_embedded_model(tmp_path) == folder
    second_seconds = time.perf_counter() - started
    assert second_seconds < 20

    # The public loaders resolve the embedded id to the same folder.
    loaded_tokenizer = load_tokenizer(embedded.EMBEDDED_MODEL_ID, embedded_cache_dir=tmp_path)
    assert loaded_tokenizer("Hi").input_ids[:1] == [2]
    loaded = load_causal_lm(embedded.EMBEDDED_MODEL_ID, embedded_cache_dir=tmp_path)
    ids = loaded_tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.isfinite(loaded(input_ids=ids).logits).all()

    print(
        f"\nembedded conversion: first call {first_seconds:.1f} s, second call "
        f"{second_seconds:.3f} s, max |logit diff| {marker['max_abs_logit_diff']:.2e}, "
        f"prompt loss {marker['prompt_loss']:.2f}, "
        f"folder {embedded.folder_size_bytes(folder) / 2**20:.0f} MiB"
    )
