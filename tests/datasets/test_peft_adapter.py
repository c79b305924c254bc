import pytest
from kedro.io import DatasetError, Version
from peft import LoraConfig, PeftModel, get_peft_model

from gemma_pipeline.datasets import PeftAdapterDataset
from gemma_pipeline.modeling import load_causal_lm


def test_saves_safetensors_and_loads_the_folder_path(tmp_path, tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x")
    adapter = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    version = Version(None, "2026-01-01T00.00.00.000Z")
    dataset = PeftAdapterDataset(filepath=str(tmp_path / "adapter"), version=version)
    dataset.save(adapter)

    path = PeftAdapterDataset(
        filepath=str(tmp_path / "adapter"), version=Version(None, None)
    ).load()
    assert path.endswith("2026-01-01T00.00.00.000Z/adapter")
    assert (
        tmp_path / "adapter" / "2026-01-01T00.00.00.000Z" / "adapter" / "adapter_model.safetensors"
    ).is_file()
    assert not list(tmp_path.rglob("*.partial"))
    reloaded = PeftModel.from_pretrained(
        load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x"), path
    )
    assert reloaded.peft_config["default"].r == 2


def test_refuses_a_plain_model(tmp_path, tiny_model_dir):
    dataset = PeftAdapterDataset(filepath=str(tmp_path / "adapter"), version=Version(None, None))
    with pytest.raises(DatasetError, match="PeftModel"):
        dataset.save(load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x"))
    assert not dataset.exists()
