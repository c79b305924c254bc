"""The throughput benchmark's own code path, on a tiny model and short rows (CPU-sized)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_follow_the_length_mix(bench):
    rows = bench.sample_rows(2000, vocab_size=1000)
    summary = bench.length_summary(rows)
    assert all(len(row["input_ids"]) <= bench.MAX_LENGTH for row in rows)
    assert all(
        row["labels"][: row["prompt_length"]] == [-100] * row["prompt_length"] for row in rows
    )
    # RACE passages dominate: long rows, a sizeable share cut at 512, short completions.
    assert 300 < summary["mean_tokens"] < 420
    assert 0.05 < summary["share_at_512"] < 0.3
    assert summary["mean_completion_tokens"] < 12


def test_the_equality_check_passes_on_the_tiny_model(bench):
    result = bench.check_packed_matches_padded(tiny=True)
    assert result["loss_relative_error"] < 1e-5
    assert result["max_grad_relative_error"] < 1e-4


def test_both_recipes_train_through_the_project_trainer(bench, tmp_path, monkeypatch):
    # Short rows keep the dense CPU attention over a packed step cheap.
    monkeypatch.setattr(bench, "LENGTH_MIX", {"short": (1.0, (24, 0.3), (4, 0.3))})
    bench.write_random_model(tmp_path, tiny=True)
    padded = bench.run_recipe("padded", tmp_path, steps=1, warmup=1, seed=0)
    packed = bench.run_recipe("packed", tmp_path, steps=1, warmup=1, seed=0)

    assert padded["examples_per_step"] == packed["examples_per_step"] == 32
    assert padded["padded_tokens"] == 32 * 512  # every row padded to 512
    assert packed["padded_tokens"] == packed["real_tokens"] == padded["real_tokens"]
    assert padded["setup"]["micro_batch"] == 4
    assert padded["setup"]["gradient_accumulation_steps"] == 8
    assert packed["setup"]["micro_batch"] == 32
    # Same data, same initial weights, same maths: the first step's loss agrees.
    assert packed["losses"][0] == pytest.approx(padded["losses"][0], rel=1e-3)
