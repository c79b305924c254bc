"""The throughput benchmark's own code path, on a tiny model and short rows (CPU-sized)."""

import importlib.util
import json
import subprocess
import sys
import time
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

    # A variant: the packed recipe with overrides, in micro-batches, without checkpointing.
    overrides = {
        "optim": "adamw_torch",
        "gradient_checkpointing": False,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 4,
    }
    variant = bench.run_recipe("packed", tmp_path, 1, 1, seed=0, overrides=overrides)
    assert variant["setup"]["micro_batch"] == 8
    assert variant["setup"]["gradient_accumulation_steps"] == 4
    assert variant["examples_per_step"] == 32
    assert variant["real_tokens"] == padded["real_tokens"]
    assert variant["losses"][0] == pytest.approx(padded["losses"][0], rel=1e-3)
    # Every step is timed, the first included; the timed ones are the last `steps`.
    for run in (padded, packed, variant):
        assert len(run["step_seconds"]) == 2
        assert run["timed_step_seconds"] == run["step_seconds"][1:]
        assert run["seconds"] == pytest.approx(sum(run["timed_step_seconds"]))
        assert run["device_samples"] == {}  # no CUDA here


def test_gpu_samples_are_assigned_to_their_steps(bench):
    samples = [(0.5, 90, 1980), (1.5, 40, 1500), (1.8, 60, 1700), (2.5, 99, 1980)]
    found = bench.per_step_gpu(samples, starts=[0.0, 1.0, 3.0], ends=[1.0, 2.0, 4.0])
    assert found["busy_pct"] == [90, 50, None]
    assert found["sm_clock_mhz"] == [1980, 1600, None]
    assert found["sm_clock_min"] == [1980, 1500, None]
    assert bench.GpuSampler.probe() is None or bench._cuda()  # no NVML without CUDA


def test_step_trend_finds_a_growing_step_time(bench):
    growing = bench.step_trend([4.0, 4.2, 4.4, 4.6])
    assert growing["slope_s_per_step"] == pytest.approx(0.2)
    assert growing["last_over_first"] == pytest.approx(1.15)
    assert bench.step_trend([0.6, 0.6, 0.6])["slope_s_per_step"] == pytest.approx(0.0)
    assert bench.step_trend([0.6])["slope_s_per_step"] is None


def test_the_short_mix_has_rows_of_about_180_tokens(bench):
    # The tiny model's vocabulary: only the ids change with it, not the lengths.
    short = bench.length_summary(bench.sample_rows(2000, vocab_size=1024, mix="short"))
    real = bench.length_summary(bench.sample_rows(2000, vocab_size=1024, mix="real"))
    assert 170 <= short["median_tokens"] <= 195
    assert short["share_at_512"] < 0.03  # hardly any row is cut
    assert short["mean_completion_tokens"] < 12
    assert real["median_tokens"] > 1.8 * short["median_tokens"]


def test_variants_are_validated_overrides_of_the_training_parameters(bench):
    variant = bench.parse_variant(
        "nockpt-8x4:gradient_checkpointing=false, per_device_train_batch_size=8,"
        "gradient_accumulation_steps=4"
    )
    assert variant == {
        "name": "nockpt-8x4",
        "recipe": "packed",
        "overrides": {
            "gradient_checkpointing": False,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 4,
        },
    }
    params = bench.check_entry(variant)
    assert (params.per_device_train_batch_size, params.gradient_accumulation_steps) == (8, 4)
    assert not params.gradient_checkpointing
    assert bench.check_entry(bench.parse_variant("r16:lora.r=16")).lora.r == 16
    for bad in (
        "fewer:per_device_train_batch_size=8",  # 8 examples per step, not 32
        "steps:max_steps=3",  # the benchmark's own
        "typo:gradient_checkpoint=false",  # no such field
        "nobody",
    ):
        with pytest.raises(ValueError):
            bench.parse_variant(bad)


def _run(name, mix, repeat, rate, steps, peak):
    return {
        "name": name,
        "mix": mix,
        "repeat": repeat,
        "real_tokens_per_s": rate,
        "padded_tokens_per_s": rate * 1.5,
        "timed_step_seconds": steps,
        "peak_allocated_gib": peak,
        "peak_reserved_gib": peak + 1,
        "losses": [12.0, 11.0],
    }


def test_summaries_are_medians_with_spread_and_ratios_of_medians(bench):
    results = {
        "settings": {"length_mixes": ["real"]},
        "parameters": 1000,
        "entries": [{"name": "padded"}, {"name": "packed"}],
        "runs": [
            _run("padded", "real", 0, 2000.0, [4.0, 4.5], 9.0),
            _run("padded", "real", 1, 3000.0, [3.0, 3.1], 9.5),
            _run("padded", "real", 2, 2500.0, [3.5, 3.6], 9.0),
            _run("packed", "real", 0, 20000.0, [0.5, 0.6], 5.0),
            _run("packed", "real", 1, 24000.0, [0.4, 1.2], 5.0),
            {"name": "packed", "mix": "real", "repeat": 2, "error": "exit 1"},
        ],
    }
    bench.collate(results)
    padded, packed = results["summary"]["real"]["padded"], results["summary"]["real"]["packed"]
    assert padded["real_tokens_per_s"] == {"median": 2500.0, "min": 2000.0, "max": 3000.0, "n": 3}
    assert padded["timed_step_seconds"]["median"] == pytest.approx(3.55)
    assert packed["runs"] == 3
    assert packed["failed"] == 1  # a failed run is counted, not averaged in
    assert packed["real_tokens_per_s"]["median"] == 22000
    assert (packed["timed_step_seconds"]["min"], packed["timed_step_seconds"]["max"]) == (0.4, 1.2)
    assert padded["peak_allocated_gib"] == 9.5  # the highest of the runs
    ratio = results["speedup_real_tokens"]["real"]["packed"]
    assert ratio["median_ratio"] == pytest.approx(22000 / 2500)
    assert ratio["worst_ratio"] == pytest.approx(20000 / 3000)
    assert ratio["best_ratio"] == pytest.approx(24000 / 2000)
    assert ratio["peak_allocated_over_base"] == pytest.approx(5.0 / 9.5)
    printed = bench.table(
        results
        | {
            "device": "cpu",
            "versions": {},
            "lengths": {"real": {"median_tokens": 382, "mean_tokens": 344}},
        }
    )
    assert "| packed | 2/3 | 22,000 [20,000-24,000] |" in printed
    assert "8.80x (6.67-12.00)" in printed


def test_jobs_run_repeat_major_in_lanes_with_timeouts_and_a_deadline(bench):
    entries = [
        {"name": "padded", "variant": False},
        {"name": "packed", "variant": False},
        {"name": "fused", "variant": True},
    ]
    jobs = bench.plan_jobs(entries, ["real", "short"], repeats=2, variant_repeats=1)
    assert [(j["repeat"], j["mix"], j["name"]) for j in jobs[:4]] == [
        (0, "real", "padded"),
        (0, "real", "packed"),
        (0, "real", "fused"),
        (0, "short", "padded"),
    ]
    assert sum(j["name"] == "fused" for j in jobs) == 2  # once per mix
    assert sum(j["name"] == "padded" for j in jobs) == 4

    scripts = {
        "ok": "import json, time; time.sleep(1.0); print('log'); print(json.dumps({'x': 1}))",
        "fails": "import sys; sys.exit(3)",
        "hangs": "import time; time.sleep(60)",
    }
    done = {}
    started = time.monotonic()
    bench.run_jobs(
        [
            {"name": n, "kind": k}
            for n, k in zip("abcd", ("ok", "ok", "fails", "hangs"), strict=True)
        ],
        lambda job: [sys.executable, "-c", scripts[job["kind"]]],
        lambda job, result: done.setdefault(job["name"], result | {"lane": job["lane"]}),
        lanes=2,
        timeout=4,
    )
    assert done["a"]["x"] == done["b"]["x"] == 1
    assert {done["a"]["lane"], done["b"]["lane"]} == {0, 1}  # side by side
    assert done["c"]["error"] == "exit 3"
    assert done["d"]["error"] == "over 4 s"
    assert time.monotonic() - started < 20

    skipped = {}
    bench.run_jobs(
        [{"name": "late", "kind": "ok"}],
        lambda job: [sys.executable, "-c", scripts[job["kind"]]],
        lambda job, result: skipped.setdefault(job["name"], result),
        deadline=time.monotonic() - 1,
    )
    assert skipped["late"]["error"].startswith("not run")


def test_data_parallel_entries_keep_the_micro_batch_per_gpu_and_the_step(bench):
    entries = [
        {"name": "padded", "recipe": "padded", "overrides": {}, "variant": False},
        {"name": "packed", "recipe": "packed", "overrides": {}, "variant": False},
    ]
    found = {entry["name"]: entry for entry in bench.data_parallel_entries(entries, 2)}
    assert set(found) == {"padded@1", "padded@2", "packed@1", "packed@2"}
    for name, micro_batch, accumulation in (("packed", 16, 1), ("padded", 4, 4)):
        one, two = found[f"{name}@1"], found[f"{name}@2"]
        params = {
            key: bench.recipe_params(entry["recipe"], 1, "unused", entry["overrides"])
            for key, entry in (("one", one), ("two", two))
        }
        assert params["one"].examples_per_step == params["two"].examples_per_step == 32
        # The same micro-batch on each GPU; one GPU accumulates twice as many.
        assert bench.micro_batching(params["two"], 2) == (micro_batch, accumulation)
        assert bench.micro_batching(params["one"], 1) == (micro_batch, 2 * accumulation)
        assert (one["processes"], two["processes"]) == (1, 2)
    args = type("Args", (), {"steps": 1, "warmup": 0})()
    command = bench.worker_command(found["packed@2"] | {"mix": "real"}, "/m", args)
    assert command[1:7] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        bench.__file__,
    ]
    assert "torch.distributed.run" not in bench.worker_command(
        found["packed@1"] | {"mix": "real"}, "/m", args
    )
    with pytest.raises(ValueError, match="do not split into 3 equal shares"):
        bench.data_parallel_entries(entries[1:], 3)


def test_data_parallel_runs_are_compared_on_speed_and_per_step_loss(bench):
    results = {
        "settings": {"length_mixes": ["real"]},
        "parameters": 1000,
        "entries": [
            {"name": "packed@1", "processes": 1, "compares": "packed"},
            {"name": "packed@2", "processes": 2, "compares": "packed"},
        ],
        "runs": [
            _run("packed@1", "real", 0, 10000.0, [1.0, 1.0], 5.0) | {"losses": [2.0, 1.5]},
            _run("packed@1", "real", 1, 12000.0, [1.0, 1.0], 5.0) | {"losses": [2.0, 1.5]},
            _run("packed@2", "real", 0, 19000.0, [0.5, 0.5], 5.0)
            | {"losses": [2.0, 1.5002], "processes": 2},
        ],
    }
    bench.collate(results)
    compared = results["data_parallel"]["real"]["packed"]
    assert compared["speedup"] == pytest.approx(19000 / 11000)
    assert compared["scaling_efficiency"] == pytest.approx(19000 / 11000 / 2)
    assert compared["max_abs_loss_difference"] == pytest.approx(2e-4)
    assert results["summary"]["real"]["packed@2"]["mfu"] == pytest.approx(
        6 * 1000 * 19000 / bench.BF16_PEAK_FLOPS / 2
    )
    (line,) = bench.data_parallel_lines(results["data_parallel"]["real"])
    assert "19,000 against 11,000 real tok/s, 1.73x, scaling efficiency 86%" in line
    assert bench.last_json_object('{"a": 1}\nrank 1 said something\n') == {"a": 1}
    assert bench.last_json_object("no json\n[1, 2]\n") is None


@pytest.mark.slow
def test_the_data_parallel_comparison_runs_on_the_cpu(tmp_path):
    # Two real launches: torchrun with 2 gloo processes, and one process, on the tiny model.
    out = tmp_path / "ddp.json"
    command = [sys.executable, str(SCRIPT), "--tiny", "--gpus", "2", "--recipes", "packed"]
    command += ["--steps", "2", "--warmup", "1", "--repeats", "1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    compared = json.loads(out.read_text())["data_parallel"]["real"]["packed"]
    assert compared["processes"] == 2
    assert compared["real_tokens_per_s"] > 0 and compared["one_gpu_real_tokens_per_s"] > 0
    assert len(compared["losses"]["packed@2"]) == 3
    # bf16 weights on the CPU, the step summed in another order: bf16-sized differences
    assert compared["max_abs_loss_difference"] < 1e-3
