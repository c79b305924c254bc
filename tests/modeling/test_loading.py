"""Model-name resolution, tokenizer and model loading, and the hub-failure message."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from gemma_pipeline.modeling import embedded, loading
from gemma_pipeline.modeling.chat_template import GEMMA_CHAT_TEMPLATE
from gemma_pipeline.modeling.loading import (
    ModelSourceUnavailableError,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
)

HUB_ID = "google/gemma-2-2b-it"


def _raise_offline(*args: Any, **kwargs: Any) -> None:
    raise OSError("We couldn't connect to 'https://huggingface.co'")


# --- resolve_model_path ---------------------------------------------------------------------


def test_embedded_id_resolves_to_the_converted_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[Path] = []

    def fake_ensure(cache_dir: str | Path) -> Path:
        calls.append(Path(cache_dir))
        return Path(cache_dir) / "converted"

    monkeypatch.setattr(loading, "ensure_embedded_model", fake_ensure)
    resolved = resolve_model_path(embedded.EMBEDDED_MODEL_ID, embedded_cache_dir=tmp_path)
    assert resolved == str(tmp_path / "converted")
    assert calls == [tmp_path]


def test_local_folder_resolves_to_itself(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert resolve_model_path(str(tiny_model_dir), embedded_cache_dir=tmp_path) == str(
        tiny_model_dir
    )


def test_hub_id_passes_through_without_touching_the_embedded_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert resolve_model_path(HUB_ID, embedded_cache_dir=cache) == HUB_ID
    assert not cache.exists()


# --- load_tokenizer ---------------------------------------------------------------------------


def test_tiny_tokenizer_adds_exactly_one_bos_and_no_eos(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer("The answer is (B).").input_ids
    assert ids[0] == tiny_tokenizer.bos_token_id
    assert ids.count(tiny_tokenizer.bos_token_id) == 1
    assert tiny_tokenizer.eos_token_id not in ids


def test_tiny_tokenizer_has_gemma_special_tokens(tiny_tokenizer: Any) -> None:
    assert [
        tiny_tokenizer.pad_token_id,
        tiny_tokenizer.eos_token_id,
        tiny_tokenizer.bos_token_id,
        tiny_tokenizer.unk_token_id,
    ] == [0, 1, 2, 3]
    turn_ids = tiny_tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    assert tiny_tokenizer.unk_token_id not in turn_ids
    assert len(tiny_tokenizer) <= 1024


def test_tiny_tokenizer_round_trips_text(tiny_tokenizer: Any) -> None:
    text = "Question: 12% of $50?\n(A) 6\tÉtude — 中文"
    ids = tiny_tokenizer(text).input_ids
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_load_tokenizer_prepares_for_training(tiny_tokenizer: Any) -> None:
    assert tiny_tokenizer.padding_side == "right"
    assert tiny_tokenizer.pad_token == "<pad>"
    assert tiny_tokenizer.chat_template == GEMMA_CHAT_TEMPLATE


def test_load_tokenizer_from_model_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir), embedded_cache_dir=tmp_path)
    assert tokenizer.chat_template == GEMMA_CHAT_TEMPLATE
    assert tokenizer.pad_token_id == 0


def _save_word_tokenizer(folder: Path, vocab: dict[str, int], **special: str) -> Path:
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(folder)
    return folder


def test_missing_pad_token_uses_gemma_pad(tmp_path: Path) -> None:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "hi": 4}
    folder = _save_word_tokenizer(tmp_path / "tok", vocab, eos_token="<eos>", unk_token="<unk>")
    tokenizer = load_tokenizer(str(folder), embedded_cache_dir=tmp_path)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<pad>", 0)


def test_missing_pad_token_falls_back_to_eos(tmp_path: Path) -> None:
    vocab = {"<eos>": 0, "<unk>": 1, "hi": 2}
    folder = _save_word_tokenizer(tmp_path / "tok", vocab, eos_token="<eos>", unk_token="<unk>")
    tokenizer = load_tokenizer(str(folder), embedded_cache_dir=tmp_path)
    assert tokenizer.pad_token == "<eos>"


# --- load_causal_lm ---------------------------------------------------------------------------


def test_tiny_model_loads_with_eager_attention_and_finite_logits(
    tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir=tmp_path)
    assert model.config._attn_implementation == "eager"
    assert model.config.attn_logit_softcapping == 50.0
    assert model.config.final_logit_softcapping == 30.0
    assert model.dtype == torch.float32
    batch = tiny_tokenizer(
        ["Hello world", "What is the answer?"], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        logits = model(**batch).logits
    assert logits.shape == (*batch.input_ids.shape, len(tiny_tokenizer))
    assert torch.isfinite(logits).all()
    # Final soft-capping bounds every logit by the cap.
    assert logits.abs().max() <= 30.0


def test_tiny_model_loads_in_bfloat16(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir=tmp_path, dtype="bfloat16")
    assert model.dtype == torch.bfloat16


def test_unknown_dtype_is_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unsupported dtype 'float64'"):
        load_causal_lm(str(tiny_model_dir), embedded_cache_dir=tmp_path, dtype="float64")  # type: ignore[arg-type]


def test_model_is_loaded_from_safetensors_without_remote_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def fake_from_pretrained(path: str, **kwargs: Any) -> str:
        seen.update(kwargs, path=path)
        return "model"

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    assert load_causal_lm(HUB_ID, embedded_cache_dir=tmp_path, dtype="bfloat16") == "model"
    assert seen["path"] == HUB_ID
    assert seen["use_safetensors"] is True
    assert seen["trust_remote_code"] is False
    assert seen["dtype"] == torch.bfloat16
    assert seen["attn_implementation"] == "eager"
    assert "torch_dtype" not in seen


# --- hub failures -----------------------------------------------------------------------------


def test_hub_failure_for_model_points_to_demo_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", _raise_offline)
    with pytest.raises(ModelSourceUnavailableError, match="kedro run --env demo") as caught:
        load_causal_lm(HUB_ID, embedded_cache_dir=tmp_path)
    assert HUB_ID in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


def test_hub_failure_for_tokenizer_points_to_demo_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", _raise_offline)
    with pytest.raises(ModelSourceUnavailableError, match="kedro run --env demo"):
        load_tokenizer(HUB_ID, embedded_cache_dir=tmp_path)


def test_offline_hub_really_fails_with_the_demo_hint(tmp_path: Path) -> None:
    # conftest sets HF_HUB_OFFLINE=1, so this is the real offline error path, no network used.
    with pytest.raises(ModelSourceUnavailableError, match="--env demo"):
        load_tokenizer("gemma-pipeline-tests/no-such-model", embedded_cache_dir=tmp_path)


def test_broken_local_folder_error_is_not_blamed_on_the_hub(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    weightless = tmp_path / "weightless-model"
    weightless.mkdir()
    shutil.copy(tiny_model_dir / "config.json", weightless / "config.json")
    with pytest.raises(OSError) as caught:
        load_causal_lm(str(weightless), embedded_cache_dir=tmp_path)
    assert not isinstance(caught.value, ModelSourceUnavailableError)
