"""Model-name resolution, tokenizer and model loading, and the hub-failure message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
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


def _save_word_tokenizer(folder: Path, vocab: dict[str, int], **special: Any) -> Path:
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(folder)
    return folder


GEMMA_VOCAB = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "hi": 4}


def test_a_tokenizer_without_a_chat_template_gets_gemmas_and_right_padding(
    tmp_path: Path,
) -> None:
    folder = _save_word_tokenizer(
        tmp_path / "tok", GEMMA_VOCAB, pad_token="<pad>", eos_token="<eos>", padding_side="left"
    )
    saved = AutoTokenizer.from_pretrained(folder)
    assert not saved.chat_template and saved.padding_side == "left"  # what load_tokenizer fixes
    tokenizer = load_tokenizer(str(folder), embedded_cache_dir=tmp_path)
    assert tokenizer.chat_template == GEMMA_CHAT_TEMPLATE
    assert tokenizer.padding_side == "right"


def test_a_tokenizer_with_its_own_chat_template_keeps_it(tmp_path: Path) -> None:
    own_template = "{% for message in messages %}[{{ message['content'] }}]{% endfor %}"
    folder = _save_word_tokenizer(
        tmp_path / "tok", GEMMA_VOCAB, pad_token="<pad>", chat_template=own_template
    )
    tokenizer = load_tokenizer(str(folder), embedded_cache_dir=tmp_path)
    assert tokenizer.chat_template == own_template
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == "[hi]"


def test_missing_pad_token_uses_gemma_pad(tmp_path: Path) -> None:
    folder = _save_word_tokenizer(
        tmp_path / "tok", GEMMA_VOCAB, eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer = load_tokenizer(str(folder), embedded_cache_dir=tmp_path)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<pad>", GEMMA_VOCAB["<pad>"])


def test_missing_pad_token_falls_back_to_eos(tmp_path: Path) -> None:
    vocab = {"<eos>": 0, "<unk>": 1, "hi": 2}
    folder = _save_word_tokenizer(tmp_path / "tok", vocab, eos_token="<eos>", unk_token="<unk>")
    tokenizer = load_tokenizer(str(folder), embedded_cache_dir=tmp_path)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<eos>", vocab["<eos>"])


# --- load_causal_lm ---------------------------------------------------------------------------


def test_model_loads_the_saved_weights_in_float32_with_eager_attention(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir=tmp_path)
    # eager by default: the only attention that applies Gemma-2's attention softcap.
    assert model.config._attn_implementation == "eager"
    assert model.dtype == torch.float32
    saved = load_file(tiny_model_dir / "model.safetensors")
    loaded = model.state_dict()
    for name, tensor in saved.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)


def test_tiny_model_loads_in_bfloat16(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir=tmp_path, dtype="bfloat16")
    assert model.dtype == torch.bfloat16


def test_unknown_dtype_is_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unsupported dtype 'float64'"):
        load_causal_lm(str(tiny_model_dir), embedded_cache_dir=tmp_path, dtype="float64")  # type: ignore[arg-type]


def test_pickled_weights_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A folder with only pytorch_model.bin (a pickle) loads in transformers, never here."""
    pickled = tmp_path / "pickled-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    assert isinstance(AutoModelForCausalLM.from_pretrained(pickled), type(model))
    with pytest.raises(OSError, match=r"model\.safetensors") as caught:
        load_causal_lm(str(pickled), embedded_cache_dir=tmp_path)
    assert not isinstance(caught.value, ModelSourceUnavailableError)  # a local folder


def test_code_shipped_with_a_model_never_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "custom-code-model"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "model.safetensors", folder / "model.safetensors")
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config |= {
        "model_type": "custom_gemma",
        "architectures": ["CustomModel"],
        "auto_map": {
            "AutoConfig": "modeling_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "custom-code-ran"
    (folder / "modeling_custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from transformers import Gemma2Config, Gemma2ForCausalLM\n"
        "class CustomConfig(Gemma2Config):\n    model_type = 'custom_gemma'\n"
        "class CustomModel(Gemma2ForCausalLM):\n    config_class = CustomConfig\n"
    )
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_causal_lm(str(folder), embedded_cache_dir=tmp_path)
    assert not marker.exists()


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


@pytest.mark.parametrize("load", [load_tokenizer, load_causal_lm])
def test_a_missing_local_path_is_named_as_not_a_local_folder(load: Any, tmp_path: Path) -> None:
    missing = str(tmp_path / "06_models" / "no-such-model")
    with pytest.raises(ModelSourceUnavailableError) as caught:
        load(missing, embedded_cache_dir=tmp_path)
    assert f"Could not load {missing!r}: it is not a local folder" in str(caught.value)


def test_broken_local_folder_error_is_not_blamed_on_the_hub(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    weightless = tmp_path / "weightless-model"
    weightless.mkdir()
    shutil.copy(tiny_model_dir / "config.json", weightless / "config.json")
    with pytest.raises(OSError) as caught:
        load_causal_lm(str(weightless), embedded_cache_dir=tmp_path)
    assert not isinstance(caught.value, ModelSourceUnavailableError)


def test_sdpa_is_refused_for_a_model_that_caps_its_attention(tiny_model_dir: Path) -> None:
    """The tiny Gemma-2 soft-caps attention logits, as Gemma 2 does: sdpa would drop the cap."""
    with pytest.raises(ValueError, match="soft-caps its attention logits"):
        load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", attn_implementation="sdpa")


def test_sdpa_computes_gemma3s_attention_as_eager_does(gemma3_dir: Path) -> None:
    """Gemma 3 caps nothing: sdpa gives eager's logits, past the sliding window and with padding."""
    torch.manual_seed(0)
    input_ids = torch.randint(5, 200, (2, 48))  # longer than the tiny model's window of 32
    mask = torch.ones_like(input_ids)
    mask[1, :7] = 0  # left padding
    logits = {}
    for attn in ("eager", "sdpa"):
        model = load_causal_lm(
            str(gemma3_dir), embedded_cache_dir="x", dtype="float32", attn_implementation=attn
        ).eval()
        with torch.inference_mode():
            logits[attn] = model(input_ids=input_ids, attention_mask=mask).logits
    assert model.config._attn_implementation == "sdpa"
    assert torch.allclose(logits["eager"][0], logits["sdpa"][0], atol=1e-4)
    assert torch.allclose(logits["eager"][1, 7:], logits["sdpa"][1, 7:], atol=1e-4)
