import subprocess
import sys

import pandas as pd
import pytest

import gemma_pipeline.sources as sources
from gemma_pipeline.sources import (
    SourceLayoutError,
    normalize,
    normalize_gsm8k,
    normalize_mathqa,
    normalize_mmlu,
)

#: One raw row per task, in its hub layout, each readable only by its own normalizer.
RAW_BY_TASK = {
    "mmlu": (normalize_mmlu, [{"question": "q", "choices": ["x", "y"], "answer": 1}]),
    "mathqa": (normalize_mathqa, [{"problem": "p", "options": list("12345"), "correct": "e"}]),
    "gsm8k": (normalize_gsm8k, [{"question": "How many?", "answer": "2 + 2 = 4\n#### 4"}]),
}


@pytest.mark.parametrize("task", sorted(RAW_BY_TASK))
def test_dispatches_to_the_tasks_normalizer(task):
    normalizer, rows = RAW_BY_TASK[task]
    where = dict(source="src", split="test", origin="o")
    accepted, rejected = normalize(task, pd.DataFrame(rows), **where)
    expected_accepted, expected_rejected = normalizer(pd.DataFrame(rows), **where)
    pd.testing.assert_frame_equal(accepted, expected_accepted)
    pd.testing.assert_frame_equal(rejected, expected_rejected)
    assert accepted["task"].tolist() == [task]
    assert accepted["source"].tolist() == ["src"]


def test_keep_duplicates_reaches_the_normalizer():
    _, rows = RAW_BY_TASK["mmlu"]
    twice = pd.DataFrame(rows * 2)
    where = dict(source="s", split="test", origin="o")
    dropped, rejected = normalize("mmlu", twice, **where)
    kept, none_rejected = normalize("mmlu", twice, **where, keep_duplicates=True)
    assert (len(dropped), len(rejected)) == (1, 1)
    assert (len(kept), len(none_rejected)) == (2, 0)


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


def test_sample_generators_are_exported_lazily():
    from gemma_pipeline.sources import SAMPLE_SPLITS, generate_mmlu_raw, sample

    assert generate_mmlu_raw is sample.generate_mmlu_raw
    assert SAMPLE_SPLITS is sample.SAMPLE_SPLITS
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = sources.no_such_name


def test_the_sample_module_runs_without_the_double_import_warning():
    # An eager import of sample in the package would make runpy warn (an error here).
    command = [sys.executable, "-W", "error::RuntimeWarning", "-m", "gemma_pipeline.sources.sample"]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
