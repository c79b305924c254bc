import builtins
import logging

from gemma_pipeline.training.kernels import apply_fused_kernels


def test_without_liger_the_model_is_left_as_it_is(tiny_model_dir, monkeypatch, caplog):
    from gemma_pipeline.modeling import load_causal_lm

    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32")
    real_import = builtins.__import__

    def no_liger(name, *args, **kwargs):
        if name.startswith("liger_kernel"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_liger)
    forward = model.model.layers[0].mlp.forward
    with caplog.at_level(logging.WARNING):
        assert apply_fused_kernels(model) is False
    assert "liger-kernel is not installed" in caplog.text
    assert model.model.layers[0].mlp.forward == forward


def test_other_model_types_get_no_kernels():
    class Config:
        model_type = "llama"

        def get_text_config(self):
            return self

    class Model:
        config = Config()

    assert apply_fused_kernels(Model()) is False
