import pandas as pd
import pytest

import gemma_pipeline.sources as sources
from gemma_pipeline.sources import SourceLayoutError, normalize


def test_dispatches_by_task():
    mmlu = pd.DataFrame([{"question": "q", "choices": ["x", "y"], "answer": 1}])
    accepted, _ = normalize("mmlu", mmlu, source="mmlu", split="test", origin="o")
    assert accepted["task"].tolist() == ["mmlu"]
    mathqa = pd.DataFrame([{"problem": "p", "options": list("12345"), "correct": "e"}])
    accepted, _ = normalize("mathqa", mathqa, source="mq", split="test", origin="o")
    assert accepted["task"].tolist() == ["mathqa"]
    assert accepted["source"].tolist() == ["mq"]


def test_unknown_task_names_the_allowed_ones():
    with pytest.raises(
        ValueError, match=r"unknown task 'arc'; expected one of: gsm8k, mathqa, mmlu"
    ):
        normalize("arc", pd.DataFrame(), source="s", split="test", origin="o")


def test_a_frame_for_the_other_task_is_a_layout_error():
    mathqa = pd.DataFrame([{"Problem": "p", "options": "a ) 1", "correct": "a"}])
    with pytest.raises(SourceLayoutError, match="cannot read mmlu source 'hub:x'"):
        normalize("mmlu", mathqa, source="s", split="test", origin="hub:x")


def test_non_frame_input_is_a_type_error():
    with pytest.raises(TypeError, match="expected a pandas DataFrame, got list"):
        normalize("mmlu", [{"question": "q"}], source="s", split="test", origin="o")


def test_public_api():
    for name in ("normalize", "SourceLayoutError", "parse_options", "load_local", "load_hub"):
        assert name in sources.__all__
        assert hasattr(sources, name)
    assert issubclass(SourceLayoutError, ValueError)


def test_sample_generators_are_exported_lazily():
    from gemma_pipeline.sources import SAMPLE_SPLITS, generate_mmlu_raw, sample

    assert generate_mmlu_raw is sample.generate_mmlu_raw
    assert SAMPLE_SPLITS == ("train", "validation", "test")
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = sources.no_such_name
