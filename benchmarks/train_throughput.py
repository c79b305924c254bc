"""Issues 5, 13 and 15: QLoRA training throughput, the seed's recipe (``padded``) against
``packed`` and variants of it on one GPU, and each of them data-parallel on N GPUs against 1.

Builds the Gemma-2-2B architecture with random weights, quantizes it to NF4 (double quant) and
trains LoRA through the project's own trainer (``build_trainer``, recipe and LoRA settings from
``conf/base/parameters_train_qlora.yml``) on rows whose lengths follow a length mix. Before that,
it checks on the device that the packed path's loss and gradients match the plain padded eager
forward on a fixed batch (a 2-layer model of the same shapes).

What is measured, and how:

- **Entries.** ``--recipes`` (``padded``: the seed's recipe; ``packed``: the default) and any
  ``--variant NAME:key=value[,key=value...]``: overrides of ``TrainQloraParams`` fields on the
  ``packed`` recipe (unless the variant sets ``recipe``), values parsed as YAML, dotted keys for
  nested fields (``lora.r=16``). A variant must keep the recipe's examples per optimizer step
  (32); the benchmark's own keys (``max_steps``, ``checkpoint_dir``, ...) cannot be overridden.
- **Repeats: separate processes.** Every (length mix, entry, repeat) is one worker process:
  model build, ``--warmup`` untimed steps, ``--steps`` timed steps. So peak memory, compile
  caches in memory and allocator state are its own, and run-to-run variance (the seed's, above
  all) shows. ``--repeats N`` (default 3) processes per recipe, ``--variant-repeats`` per variant
  (default: the same). Jobs run repeat-major (every entry once, then again), so a drift in the
  machine hits every entry alike and a ``--time-budget`` cut leaves whole rounds. Every run
  trains on the same rows in the same order (seed 0 of its length mix).
- **Summary.** Per mix and entry: median real tokens/s with min / max over the runs, the spread
  of the per-step times of every timed step of every run, the highest peak memory (allocated and
  reserved, CUDA), and MFU of the median. Ratios to ``padded`` are of the medians (with the
  worst and best case, min/max and max/min, beside them).
- **Length mixes.** ``--length-mix real short``: ``real`` is the data's mix (``LENGTH_MIX``,
  median row 382 tokens, RACE passages dominate); ``short`` is one log-normal of shorter rows
  (``SHORT_LENGTH_MIX``, median about 180 tokens per row, prompt and completion), so a ratio
  does not rest on one mix.
- **Diagnostics** (for the seed's variance; every run records them): the duration of every step,
  the first (compilation, optimizer state) included; the trend of the timed steps (least-squares
  slope in s per step, last / first: does the step time grow within a run); at every step end,
  ``torch.cuda.memory_stats()`` ``num_alloc_retries`` / ``num_ooms`` / ``num_device_alloc`` and
  the temperature; and, from NVML sampled every 0.1 s, each step's mean GPU busy share (well
  below 100%: the step waits on the host) and its mean and lowest SM clock. Guarded: on the CPU,
  or without pynvml, the device fields are simply absent.
- **Lanes.** ``--lanes K`` runs up to K one-GPU workers at once, each alone on its own GPU
  (``CUDA_VISIBLE_DEVICES``), for machines with several GPUs. Workers then share the host's CPUs,
  disk and power budget, so a launch-bound run (the seed) may run slower than alone: a ratio
  meant as a claim is best confirmed with ``--lanes 1``. Each run records its GPU.
- **Data-parallel, N GPUs against 1** (issue 15). ``--gpus N`` measures every entry twice per
  repeat: ``NAME@N``, the worker launched by torchrun as N processes (DDP, one GPU each, the
  step's 32 examples shared: ``micro_batching``), and ``NAME@1``, one process on one GPU with the
  same micro-batch per GPU, accumulating N times as many (e.g. packed: 2 GPUs x 16 rows against
  1 GPU x 16 rows x 2). Real tokens/s counts every process's tokens over rank 0's step times.
  Both see the same rows in the same order from the same weights, so they must log the same loss
  at every step (their largest difference is reported: issue 16's check). The summary gives the
  speedup of the medians and the scaling efficiency (speedup / N); MFU is per GPU; memory and
  GPU samples are rank 0's.
- **Output.** ``--out`` is written again after every worker, so a run cut short keeps what it
  finished. ``--recipe-timeout`` bounds one worker; ``--time-budget`` (seconds since the script
  began its work) stops launching new workers; those not run are listed as such.

CPU smoke test (tiny model)::

    python benchmarks/train_throughput.py --tiny --steps 1 --warmup 1 --repeats 2 \\
        --length-mix real short --variant fusedadam:optim=adamw_torch

On the GPU, padded and packed three times each and the candidate variants once each, both
mixes: 20 workers, about 1,400 GPU-seconds of them (padded ~60 s: ~30 s model build, 7 steps of
~4.5 s; packed ~75 s: build, ~40 s compiling in the warm-up, 7 steps of ~0.6 s), plus about a
minute for the equality check and the model; about 7.5-8 minutes on 4 H200s (``--lanes 4``)::

    python benchmarks/train_throughput.py --lanes 4 --length-mix real short \\
        --recipes padded packed --repeats 3 --variant-repeats 1 --steps 4 --warmup 3 \\
        --variant fused:optim=adamw_torch_fused \\
        --variant "nockpt-8x4:gradient_checkpointing=false,per_device_train_batch_size=8,\\
            gradient_accumulation_steps=4" \\
        --variant "nockpt-16x2:gradient_checkpointing=false,per_device_train_batch_size=16,\\
            gradient_accumulation_steps=2" \\
        --variant "fused-nockpt-8x4:optim=adamw_torch_fused,gradient_checkpointing=false,\\
            per_device_train_batch_size=8,gradient_accumulation_steps=4" \\
        --recipe-timeout 160 --time-budget 400 --out $OUT/train_throughput.json

- ``fused``: one fused AdamW kernel per step over the ~10M LoRA parameters, instead of the paged
  8-bit AdamW's many small launches.
- ``nockpt-*``: no recomputation, the 32 examples in micro-batches of 8 or 16 to bound the
  activations. Without checkpointing one real-shaped layer with LoRA saves about 0.29 MB per
  token (bf16, measured on the CPU), about 7 MB per token over 26 layers: the seed's 9.3 GiB peak
  leaves room for about 900 tokens per micro-batch, so expect these to exceed it (their peak is
  reported; only the speed side of the trade is learnt from them).

On one H200 (``--lanes 1``, the default) workers run one after another, so about six fit in
eight minutes: e.g. ``--length-mix real --repeats 3`` (padded and packed, ~8 min), or
``--length-mix real short --repeats 1 --variant fused:optim=adamw_torch_fused``.

Data-parallel, on a machine with 2 GPUs (``--gpus 4`` / ``--gpus 8`` the same way; N must divide
the 32 examples of a step). The default recipe, 2 x 3 workers, each ~75 s (build, compile)::

    python benchmarks/train_throughput.py --gpus 2 --recipes packed --length-mix real \
        --repeats 3 --steps 4 --warmup 3 --recipe-timeout 200 --out $OUT/train_ddp.json

CPU smoke test of that path (2 gloo processes on the tiny model)::

    python benchmarks/train_throughput.py --tiny --gpus 2 --recipes packed --steps 2 \
        --warmup 1 --repeats 1

Pre-Ampere (issue 17): ``GEMMA_PIPELINE_DEVICE_CAPABILITY=7.5`` makes every worker, and the
equality check, choose what a T4 gets (``gemma_pipeline.modeling.capability``: fp16 with loss
scaling, float16 4-bit compute, float32 unquantized weights, eager attention, no Liger). On an
H200 its speed is not a T4's; it shows that recipe trains, its losses and its peak memory::

    GEMMA_PIPELINE_DEVICE_CAPABILITY=7.5 python benchmarks/train_throughput.py \
        --length-mix real --recipes padded packed --repeats 1 --steps 4 --warmup 3 \
        --out $OUT/train_throughput_pre_ampere.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset
from tokenizers import Tokenizer, models
from transformers import Gemma2Config, Gemma2ForCausalLM, PreTrainedTokenizerFast, TrainerCallback

from gemma_pipeline.config import ModelParams, TrainQloraParams
from gemma_pipeline.distributed import is_main_process, world_size
from gemma_pipeline.modeling.capability import packed_attention, probe_device
from gemma_pipeline.prompting import IGNORE_INDEX
from gemma_pipeline.training.data import (
    CompletionCollator,
    PackingCollator,
    real_token_count,
)
from gemma_pipeline.training.kernels import allow_shape_changes, apply_fused_kernels
from gemma_pipeline.training.recipe import micro_batching
from gemma_pipeline.training.run import build_trainer
from gemma_pipeline.training.trainer import selective_causal_lm_loss

ROOT = Path(__file__).resolve().parents[1]
PAD, EOS, BOS = 0, 1, 2
#: Dense bf16 tensor-core peak of an H100 SXM and of an H200 (same chip, more memory).
BF16_PEAK_FLOPS = 989.4e12

#: Share of training rows, then log-normal token lengths (median, sigma) of prompt and completion,
#: as the tokenize stage writes them (chat template included; rows cut at 512 like the seed's).
#: MMLU auxiliary_train (99.8k rows) is 88% RACE: a 250-450 word passage, a question and four
#: options. Its other rows (ARC, OpenBookQA, MCTest, science) are short questions. Math-QA train
#: (29.8k rows) is a word problem and five options. Completions are "{letter}. {option text}".
LENGTH_MIX = {
    "mmlu_race": (0.68, (440, 0.25), (7, 0.5)),
    "mmlu_short": (0.09, (110, 0.35), (6, 0.5)),
    "mathqa": (0.23, (150, 0.30), (7, 0.4)),
}
#: A second mix of shorter rows (no reading passages): median about 180 tokens per row in all.
#: Padding wastes more of the seed's 512-token rows here than in ``LENGTH_MIX``.
SHORT_LENGTH_MIX = {
    "short": (1.0, (173, 0.45), (7, 0.5)),
}
LENGTH_MIXES = ("real", "short")
MAX_LENGTH = 512
#: TrainQloraParams fields the benchmark sets itself: a variant cannot override them.
BENCHMARK_KEYS = ("max_steps", "logging_steps", "save_steps", "checkpoint_dir", "resume")


def gemma2_2b_config(tiny: bool, layers: int | None = None) -> Any:
    """Gemma-2-2B's shapes (or a tiny stand-in for the CPU smoke test)."""
    shapes = dict(
        vocab_size=256000,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=4096,
    )
    if tiny:
        shapes = dict(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=4096,
        )
    if layers is not None:
        shapes["num_hidden_layers"] = layers
    return Gemma2Config(
        **shapes,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        max_position_embeddings=8192,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=BOS,
        tie_word_embeddings=True,
        attn_implementation="eager",  # keeps the attention softcap
    )


def length_mix(name: str) -> dict[str, Any]:
    """The table of a named length mix (looked up when called, so a test can swap one)."""
    return {"real": LENGTH_MIX, "short": SHORT_LENGTH_MIX}[name]


def sample_rows(n: int, vocab_size: int, seed: int = 0, mix: str = "real") -> list[dict[str, Any]]:
    """``n`` tokenized rows (random ids) whose lengths follow the length mix ``mix``."""
    table = length_mix(mix)
    generator = torch.Generator().manual_seed(seed)
    sources = list(table)
    shares = torch.tensor([table[name][0] for name in sources])
    picks = torch.multinomial(shares, n, replacement=True, generator=generator).tolist()

    def lognormal(median: float, sigma: float) -> int:
        return round(median * math.exp(sigma * torch.randn((), generator=generator).item()))

    rows = []
    for index, pick in enumerate(picks):
        _, prompt_shape, completion_shape = table[sources[pick]]
        completion = min(max(2, lognormal(*completion_shape)), MAX_LENGTH // 2)
        prompt = min(max(16, lognormal(*prompt_shape)), MAX_LENGTH - completion)
        ids = torch.randint(10, vocab_size, (prompt + completion,), generator=generator).tolist()
        ids[0] = BOS
        rows.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": [IGNORE_INDEX] * prompt + ids[prompt:],
                "prompt_length": prompt,
                "question_id": f"q{index}",
                "task": "mathqa" if sources[pick] == "mathqa" else "mmlu",
            }
        )
    return rows


def length_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    lengths = torch.tensor([len(row["input_ids"]) for row in rows], dtype=torch.float)
    completions = torch.tensor([len(row["input_ids"]) - row["prompt_length"] for row in rows])
    return {
        "rows": len(rows),
        "mean_tokens": lengths.mean().item(),
        "median_tokens": lengths.median().item(),
        "p90_tokens": lengths.quantile(0.9).item(),
        "share_at_512": (lengths >= MAX_LENGTH).float().mean().item(),
        "mean_completion_tokens": completions.float().mean().item(),
        "real_share_of_512": (lengths.mean() / MAX_LENGTH).item(),
    }


def write_random_model(folder: Path, tiny: bool) -> int:
    """Save a random-weight model and a minimal tokenizer; return the parameter count."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Gemma2ForCausalLM(gemma2_2b_config(tiny))
    finally:
        torch.set_default_dtype(default_dtype)
    model.save_pretrained(folder)
    parameters = sum(p.numel() for p in model.parameters())
    vocab = {"<pad>": PAD, "<eos>": EOS, "<bos>": BOS, "<unk>": 3}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    tokenizer.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()  # the recipes run in their own processes
    return parameters


def recipe_params(
    recipe: str, steps: int, checkpoint_dir: str, overrides: dict[str, Any] | None = None
) -> TrainQloraParams:
    """conf/base's training parameters, with the recipe, a variant's overrides and a short run."""
    raw = yaml.safe_load((ROOT / "conf/base/parameters_train_qlora.yml").read_text())
    values = copy.deepcopy(raw["train_qlora"]) | {"recipe": recipe}
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = values
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    values |= {
        "max_steps": steps,
        "logging_steps": 1,
        "save_steps": 10**6,  # no checkpoint inside the timed steps
        "checkpoint_dir": checkpoint_dir,
        "resume": False,
    }
    return TrainQloraParams.model_validate(values)


def parse_variant(text: str) -> dict[str, Any]:
    """``NAME:key=value[,key=value...]`` -> an entry: the ``packed`` recipe (unless ``recipe``
    is set) with those ``TrainQloraParams`` overrides (values parsed as YAML)."""
    name, colon, body = text.partition(":")
    name = name.strip()
    if not colon or not name or not body.strip():
        raise ValueError(f"variant {text!r}: expected NAME:key=value[,key=value...]")
    overrides: dict[str, Any] = {}
    for item in body.split(","):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ValueError(f"variant {name!r}: {item.strip()!r} is not key=value")
        if key.split(".")[0] in BENCHMARK_KEYS:
            raise ValueError(f"variant {name!r}: the benchmark sets {key} itself")
        overrides[key] = yaml.safe_load(value.strip())
    entry = {"name": name, "recipe": overrides.get("recipe", "packed"), "overrides": overrides}
    check_entry(entry)
    return entry


def check_entry(entry: dict[str, Any]) -> TrainQloraParams:
    """The entry's parameters; they must validate and keep the recipe's examples per step."""
    params = recipe_params(entry["recipe"], 1, "unused", entry["overrides"])
    base = recipe_params(entry["recipe"], 1, "unused")
    if params.examples_per_step != base.examples_per_step:
        raise ValueError(
            f"{entry['name']}: {params.examples_per_step} examples per optimizer step "
            f"(per_device_train_batch_size x gradient_accumulation_steps); the benchmark "
            f"compares at {base.examples_per_step}"
        )
    return params


def model_params(model_dir: Path) -> ModelParams:
    raw = yaml.safe_load((ROOT / "conf/base/parameters.yml").read_text())["model"]
    return ModelParams.model_validate(raw | {"name_or_path": str(model_dir)})


def device_sample() -> dict[str, Any]:
    """The allocator's counters (``torch.cuda.memory_stats``) and the GPU's temperature now.
    Empty without CUDA; a probe the installed torch (or pynvml) lacks gives None."""
    if not _cuda():
        return {}
    stats = torch.cuda.memory_stats()
    sample: dict[str, Any] = {
        key: stats.get(key) for key in ("num_alloc_retries", "num_ooms", "num_device_alloc")
    }
    try:
        sample["temperature_c"] = torch.cuda.temperature()
    except Exception:  # no pynvml, or a torch without the probe
        sample["temperature_c"] = None
    return sample


class GpuSampler(threading.Thread):
    """Every ``period`` s: (time, GPU busy %, SM clock MHz) from NVML (``torch.cuda.utilization``,
    ``torch.cuda.clock_rate``). A busy share well below 100% means the step waits on the host
    (Python, kernel launches, the paged optimizer), not on the GPU. Does nothing without CUDA or
    pynvml."""

    def __init__(self, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[tuple[float, float, float]] = []
        self.halt = threading.Event()

    @staticmethod
    def probe() -> tuple[float, float, float] | None:
        try:
            return time.perf_counter(), torch.cuda.utilization(), torch.cuda.clock_rate()
        except Exception:  # no pynvml, or a torch without the probes
            return None

    def start(self) -> None:
        if _cuda() and self.probe() is not None:
            super().start()

    def run(self) -> None:
        while not self.halt.wait(self.period):
            sample = self.probe()
            if sample is None:
                return
            self.samples.append(sample)

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join()


def per_step_gpu(
    samples: list[tuple[float, float, float]], starts: list[float], ends: list[float]
) -> dict[str, list[float | None]]:
    """Mean GPU busy %, mean and lowest SM clock of the samples inside each step."""
    found: dict[str, list[float | None]] = {"busy_pct": [], "sm_clock_mhz": [], "sm_clock_min": []}
    for start, end in zip(starts, ends, strict=True):
        inside = [sample for sample in samples if start <= sample[0] <= end]
        found["busy_pct"].append(statistics.fmean(s[1] for s in inside) if inside else None)
        found["sm_clock_mhz"].append(statistics.fmean(s[2] for s in inside) if inside else None)
        found["sm_clock_min"].append(min(s[2] for s in inside) if inside else None)
    return found


class StepClock(TrainerCallback):
    """Wall time at the start of training and at the end of every optimizer step (after the
    device has finished it), and the allocator's counters at every step end."""

    def __init__(self) -> None:
        self.begin: float | None = None
        self.ends: list[float] = []
        self.samples: list[dict[str, Any]] = []

    @staticmethod
    def _now() -> float:
        if _cuda():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(self._now())
        self.samples.append(device_sample())


def step_trend(seconds: list[float]) -> dict[str, float | None]:
    """Does the step time grow within the run: least-squares slope (s per step), last / first."""
    if len(seconds) < 2:
        return {"slope_s_per_step": None, "last_over_first": None}
    mean_x, mean_y = (len(seconds) - 1) / 2, statistics.fmean(seconds)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(seconds)) / sum(
        (x - mean_x) ** 2 for x in range(len(seconds))
    )
    return {"slope_s_per_step": slope, "last_over_first": seconds[-1] / seconds[0]}


def run_recipe(
    recipe: str,
    model_dir: Path,
    steps: int,
    warmup: int,
    seed: int,
    overrides: dict[str, Any] | None = None,
    mix: str = "real",
) -> dict:
    """Train ``warmup + steps`` optimizer steps; time and count tokens of the last ``steps``."""
    total = warmup + steps
    with tempfile.TemporaryDirectory() as checkpoints:
        params = recipe_params(recipe, total, checkpoints, overrides)
        rows = sample_rows(
            total * params.examples_per_step, vocab_size=_vocab(model_dir), seed=seed, mix=mix
        )
        trainer, setup = build_trainer(Dataset.from_list(rows), params, model_params(model_dir))
        clock = StepClock()
        trainer.add_callback(clock)
        tokens: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        compute_loss = trainer.compute_loss

        def counting_loss(model, inputs, *args, **kwargs):
            step = tokens[trainer.state.global_step]
            step[0] += real_token_count(inputs, PAD)
            step[1] += inputs["input_ids"].numel()
            return compute_loss(model, inputs, *args, **kwargs)

        trainer.compute_loss = counting_loss
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        sampler = GpuSampler()
        sampler.start()
        try:
            trainer.train()
        finally:
            sampler.stop()
    starts = [clock.begin, *clock.ends[:-1]]
    step_seconds = [end - start for start, end in zip(starts, clock.ends, strict=True)]
    timed = step_seconds[warmup:]
    seconds = sum(timed)
    real = sum(tokens[step][0] for step in range(warmup, total))
    padded = sum(tokens[step][1] for step in range(warmup, total))
    processes = world_size()
    if processes > 1:  # a data-parallel step trains every process's tokens
        counted = torch.tensor([real, padded], dtype=torch.long, device=trainer.args.device)
        torch.distributed.all_reduce(counted)
        real, padded = counted.tolist()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    gib = 2**30
    keys = clock.samples[-1] if clock.samples else {}
    samples = {key: [sample.get(key) for sample in clock.samples] for key in keys}
    if sampler.samples:
        samples |= per_step_gpu(sampler.samples, starts, clock.ends)
    return {
        "recipe": recipe,
        "overrides": overrides or {},
        "length_mix": mix,
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") if _cuda() else None,
        "processes": processes,  # timing, memory and GPU samples are rank 0's
        "setup": setup["setup"] | {"params": None},
        "examples_per_step": params.examples_per_step,
        "timed_steps": steps,
        "warmup_steps": warmup,
        "seconds": seconds,
        # Every optimizer step, the first (compilation, optimizer state) included.
        "step_seconds": step_seconds,
        "timed_step_seconds": timed,
        "timed_step_trend": step_trend(timed),
        "device_samples": samples,  # per step; empty without CUDA
        "real_tokens": real,
        "padded_tokens": padded,
        "real_tokens_per_s": real / seconds,
        "padded_tokens_per_s": padded / seconds,
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / gib if _cuda() else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / gib if _cuda() else None,
        "losses": losses,
    }


def _cuda() -> bool:
    return torch.cuda.is_available()


def _vocab(model_dir: Path) -> int:
    return json.loads((model_dir / "config.json").read_text())["vocab_size"]


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.double() - expected.double()).norm() / expected.double().norm())


def check_packed_matches_padded(tiny: bool) -> dict[str, Any]:
    """Loss and gradients of the packed path (packed rows, logits only where the loss is)
    against the plain padded eager forward in float32 (logits everywhere), on one batch."""
    device = "cuda" if _cuda() else "cpu"
    torch.manual_seed(0)
    reference = Gemma2ForCausalLM(gemma2_2b_config(tiny, layers=2)).to(device, torch.float32)
    packed_model = copy.deepcopy(reference)
    rows = sample_rows(8, reference.config.vocab_size, seed=1)
    padded = CompletionCollator(PAD, pad_to=MAX_LENGTH)(rows)
    packed = PackingCollator(PAD)(rows)
    padded = {key: value.to(device) for key, value in padded.items()}
    packed = {key: value.to(device) for key, value in packed.items()}

    expected = reference(**padded, use_cache=False).loss
    expected_grads = torch.autograd.grad(expected, list(reference.parameters()))
    # After the reference: Liger's RoPE patch is module-wide and would reach it too.
    # The packed recipe's kernels on this device (GEMMA_PIPELINE_DEVICE_CAPABILITY applies).
    ampere = probe_device().ampere_or_newer
    fused = ampere and apply_fused_kernels(packed_model)
    if ampere:
        allow_shape_changes()
        packed_model.set_attn_implementation(packed_attention(probe_device()))
    got = selective_causal_lm_loss(
        packed_model,
        packed["input_ids"],
        None,
        packed["labels"],
        position_ids=packed["position_ids"],
    )
    got_grads = torch.autograd.grad(got, list(packed_model.parameters()))
    errors = [_relative_error(g, e) for g, e in zip(got_grads, expected_grads, strict=True)]
    result = {
        "attention": packed_model.config._attn_implementation,
        "fused_kernels": fused,
        "dtype": "float32",
        "reference": "padded eager float32, logits at every position",
        "loss": got.item(),
        "reference_loss": expected.item(),
        "loss_relative_error": abs(got.item() - expected.item()) / abs(expected.item()),
        "max_grad_relative_error": max(errors),
        "all_grads_relative_error": _relative_error(
            torch.cat([g.flatten() for g in got_grads]),
            torch.cat([e.flatten() for e in expected_grads]),
        ),
    }
    return result


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "trl", "accelerate"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def data_parallel_entries(entries: list[dict[str, Any]], gpus: int) -> list[dict[str, Any]]:
    """Each entry twice: ``NAME@N``, trained by ``gpus`` processes as configured, and
    ``NAME@1``, one process with the same micro-batch per process and the same examples per
    optimizer step (it accumulates ``gpus`` times as many micro-batches). Same data and seed:
    the two must log the same loss at every step."""
    found = []
    for entry in entries:
        params = recipe_params(entry["recipe"], 1, "unused", entry["overrides"])
        micro_batch, per_process = micro_batching(params, gpus)
        if micro_batch * per_process * gpus != params.examples_per_step:
            raise ValueError(
                f"{entry['name']}: {params.examples_per_step} examples per optimizer step do not "
                f"split into {gpus} equal shares of equal micro-batches; choose --gpus dividing it"
            )
        single = {
            "per_device_train_batch_size": micro_batch,
            "gradient_accumulation_steps": per_process * gpus,
        }
        found.append(
            entry
            | {
                "name": f"{entry['name']}@1",
                "processes": 1,
                "overrides": entry["overrides"] | single,
                "compares": entry["name"],
            }
        )
        found.append(
            entry
            | {"name": f"{entry['name']}@{gpus}", "processes": gpus, "compares": entry["name"]}
        )
    return found


def data_parallel_comparison(results: dict[str, Any]) -> dict[str, Any]:
    """Per mix and entry: real tokens/s on N GPUs against 1 (medians), the scaling efficiency
    (that ratio / N), and the per-step losses of the first run of each, with their largest
    difference."""
    found: dict[str, Any] = {}
    for mix, by_entry in results["summary"].items():
        found[mix] = {}
        for entry in results["entries"]:
            if entry.get("processes", 1) == 1:
                continue
            single = f"{entry['compares']}@1"
            one, many = by_entry.get(single, {}), by_entry.get(entry["name"], {})
            compared: dict[str, Any] = {"processes": entry["processes"]}
            if "real_tokens_per_s" in one and "real_tokens_per_s" in many:
                speedup = many["real_tokens_per_s"]["median"] / one["real_tokens_per_s"]["median"]
                compared |= {
                    "one_gpu_real_tokens_per_s": one["real_tokens_per_s"]["median"],
                    "real_tokens_per_s": many["real_tokens_per_s"]["median"],
                    "speedup": speedup,
                    "scaling_efficiency": speedup / entry["processes"],
                }
            losses = {}
            for name in (single, entry["name"]):
                runs = [
                    run
                    for run in results["runs"]
                    if run["mix"] == mix and run["name"] == name and "losses" in run
                ]
                if runs:
                    losses[name] = min(runs, key=lambda run: run["repeat"])["losses"]
            if len(losses) == 2:
                first, second = losses.values()
                compared["losses"] = losses
                compared["max_abs_loss_difference"] = max(
                    (abs(a - b) for a, b in zip(first, second, strict=False)), default=None
                )
            found[mix][entry["compares"]] = compared
    return found


def plan_jobs(
    entries: list[dict[str, Any]], mixes: list[str], repeats: int, variant_repeats: int
) -> list[dict[str, Any]]:
    """Every (repeat, mix, entry) to run, repeat-major: each entry once, then again, ..."""
    jobs = []
    for repeat in range(max(repeats, variant_repeats)):
        for mix in mixes:
            for entry in entries:
                if repeat < (variant_repeats if entry["variant"] else repeats):
                    jobs.append({**entry, "mix": mix, "repeat": repeat})
    return jobs


def run_jobs(
    jobs: list[dict[str, Any]],
    command: Callable[[dict[str, Any]], list[str]],
    on_done: Callable[[dict[str, Any], dict[str, Any]], None],
    lanes: int = 1,
    lane_env: Callable[[int], dict[str, str]] = lambda lane: {},
    timeout: float | None = None,
    deadline: float | None = None,
) -> None:
    """Run ``command(job)`` for every job, at most ``lanes`` at once (lane ``k`` gets
    ``lane_env(k)``), in order; ``on_done(job, result)`` with the JSON of the worker's last
    stdout line, or ``{"error": ...}``. No job starts after ``deadline`` (``time.monotonic``)."""
    pending = list(jobs)
    running: dict[int, tuple[dict, subprocess.Popen, float, Any, Any]] = {}
    with contextlib.ExitStack() as files:
        while pending or running:
            for lane in range(lanes):
                if lane in running or not pending:
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    for job in pending:
                        on_done(job, {"error": "not run: over --time-budget"})
                    pending.clear()
                    break
                job = pending.pop(0)
                out = files.enter_context(tempfile.TemporaryFile("w+"))
                err = files.enter_context(tempfile.TemporaryFile("w+"))
                process = subprocess.Popen(
                    command(job),
                    stdout=out,
                    stderr=err,
                    text=True,
                    env=os.environ | lane_env(lane),
                    start_new_session=True,  # its compile workers go with it on a timeout
                )
                running[lane] = (job | {"lane": lane}, process, time.monotonic(), out, err)
            time.sleep(0.2)
            for lane, (job, process, started, out, err) in list(running.items()):
                late = False
                if process.poll() is None:
                    if timeout is None or time.monotonic() - started <= timeout:
                        continue
                    os.killpg(process.pid, signal.SIGKILL)  # the group this worker leads
                    process.wait()
                    late = True
                out.seek(0)
                err.seek(0)
                stdout, stderr = out.read(), err.read()
                out.close()
                err.close()
                del running[lane]
                if late:
                    result = {"error": f"over {timeout} s", "stderr_tail": stderr[-3000:]}
                elif process.returncode != 0:
                    print(stderr[-6000:], file=sys.stderr)
                    result = {"error": f"exit {process.returncode}", "stderr_tail": stderr[-3000:]}
                else:
                    result = last_json_object(stdout) or {
                        "error": "no JSON line",
                        "stdout_tail": stdout[-3000:],
                    }
                result["wall_seconds"] = time.monotonic() - started
                on_done(job, result)


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object: a data-parallel worker's rank 0 prints
    it, and another process may print after it."""
    for line in reversed(text.strip().splitlines()):
        try:
            found = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(found, dict):
            return found
    return None


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def summarize(runs: list[dict[str, Any]], parameters: int) -> dict[str, Any]:
    """One entry's runs in one mix: medians and spread."""
    done = [run for run in runs if "real_tokens_per_s" in run]
    summary: dict[str, Any] = {"runs": len(runs), "failed": len(runs) - len(done)}
    if not done:
        return summary
    rate = spread([run["real_tokens_per_s"] for run in done])
    peaks = [run["peak_allocated_gib"] for run in done if run["peak_allocated_gib"] is not None]
    reserved = [run["peak_reserved_gib"] for run in done if run["peak_reserved_gib"] is not None]
    summary |= {
        "real_tokens_per_s": rate,
        "padded_tokens_per_s": spread([run["padded_tokens_per_s"] for run in done]),
        "timed_step_seconds": spread([s for run in done for s in run["timed_step_seconds"]]),
        "run_step_seconds_median": [statistics.median(run["timed_step_seconds"]) for run in done],
        "peak_allocated_gib": max(peaks) if peaks else None,
        "peak_reserved_gib": max(reserved) if reserved else None,
        # Per GPU: a data-parallel run's tokens are shared by its processes.
        "mfu": 6 * parameters * rate["median"] / BF16_PEAK_FLOPS / done[0].get("processes", 1),
        "loss_first_last": [done[0]["losses"][0], done[0]["losses"][-1]],
    }
    return summary


def speedups(summary: dict[str, dict[str, Any]], base: str = "padded") -> dict[str, Any]:
    """Each entry's real tokens/s against ``base``'s: ratio of the medians, worst and best case
    (min / max and max / min), and its peak allocated memory against the base's."""
    reference = summary.get(base, {})
    if "real_tokens_per_s" not in reference:
        return {}
    ref = reference["real_tokens_per_s"]
    found = {}
    for name, entry in summary.items():
        if name == base or "real_tokens_per_s" not in entry:
            continue
        rate = entry["real_tokens_per_s"]
        found[name] = {
            "median_ratio": rate["median"] / ref["median"],
            "worst_ratio": rate["min"] / ref["max"],
            "best_ratio": rate["max"] / ref["min"],
        }
        if entry["peak_allocated_gib"] is not None and reference["peak_allocated_gib"]:
            found[name]["peak_allocated_over_base"] = (
                entry["peak_allocated_gib"] / reference["peak_allocated_gib"]
            )
    return found


def collate(results: dict[str, Any]) -> None:
    """(Re)compute the per-mix summaries and ratios from ``results["runs"]``."""
    results["summary"], results["speedup_real_tokens"] = {}, {}
    for mix in results["settings"]["length_mixes"]:
        by_entry = {
            entry["name"]: summarize(
                [
                    run
                    for run in results["runs"]
                    if run["mix"] == mix and run["name"] == entry["name"]
                ],
                results["parameters"],
            )
            for entry in results["entries"]
        }
        results["summary"][mix] = by_entry
        results["speedup_real_tokens"][mix] = speedups(by_entry)
    if any(entry.get("processes", 1) > 1 for entry in results["entries"]):
        results["data_parallel"] = data_parallel_comparison(results)


def worker_command(job: dict[str, Any], model_dir: str, args: argparse.Namespace) -> list[str]:
    """The worker, alone or, for a data-parallel job, as ``processes`` processes launched by
    torchrun (``torch.distributed.run``): the launcher a user would run it with."""
    spec = {key: job[key] for key in ("recipe", "overrides", "mix")} | {"model_dir": model_dir}
    launcher = [sys.executable]
    if job.get("processes", 1) > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(job["processes"])]
    return [
        *launcher,
        __file__,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--worker",
        json.dumps(spec),
    ]


def lane_env_for(lanes: int) -> Callable[[int], dict[str, str]]:
    """Lane k: the k-th visible GPU alone, and its share of the CPU threads."""
    if lanes == 1:
        return lambda lane: {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    threads = str(max(1, (os.cpu_count() or lanes) // lanes))

    def env(lane: int) -> dict[str, str]:
        found = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
        if _cuda():
            found["CUDA_VISIBLE_DEVICES"] = gpus[lane]
        return found

    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="*", default=["padded", "packed"])
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
        help="the packed recipe with these TrainQloraParams overrides (repeatable)",
    )
    parser.add_argument("--length-mix", nargs="+", choices=LENGTH_MIXES, default=["real"])
    parser.add_argument("--repeats", type=int, default=3, help="processes per recipe and mix")
    parser.add_argument(
        "--variant-repeats", type=int, default=None, help="processes per variant (--repeats)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiles)")
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="N > 1: each entry data-parallel on N GPUs (torchrun) and on 1, same micro-batch",
    )
    parser.add_argument("--lanes", type=int, default=1, help="workers at once, one per GPU")
    parser.add_argument("--tiny", action="store_true", help="tiny model: a CPU smoke test")
    parser.add_argument("--recipe-timeout", type=float, default=None, help="seconds per worker")
    parser.add_argument(
        "--time-budget", type=float, default=None, help="start no worker after this many seconds"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    parser.add_argument("--worker", metavar="SPEC_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        spec = json.loads(args.worker)
        measured = run_recipe(
            spec["recipe"],
            Path(spec["model_dir"]),
            args.steps,
            args.warmup,
            seed=0,
            overrides=spec["overrides"],
            mix=spec["mix"],
        )
        if is_main_process():
            print(json.dumps(measured))
        return

    started = time.monotonic()
    variant_repeats = args.repeats if args.variant_repeats is None else args.variant_repeats
    entries = [{"name": r, "recipe": r, "overrides": {}, "variant": False} for r in args.recipes]
    try:
        entries += [parse_variant(text) | {"variant": True} for text in args.variant]
        for entry in entries:
            check_entry(entry)
        if args.gpus > 1:
            entries = data_parallel_entries(entries, args.gpus)
    except ValueError as error:  # pydantic's ValidationError is one
        parser.error(str(error))
    names = [entry["name"] for entry in entries]
    if len(set(names)) != len(names):
        parser.error(f"entry names repeat: {names}")
    for option, count in (("--gpus", args.gpus), ("--lanes", args.lanes)):
        if count < 1 or (_cuda() and count > torch.cuda.device_count()):
            parser.error(f"{option} {count}: {torch.cuda.device_count()} GPUs visible")
    if args.gpus > 1 and args.lanes > 1:
        parser.error("--gpus N > 1 runs one worker at a time on all N GPUs: leave --lanes at 1")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")

    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if _cuda() else "cpu",
        "versions": versions(),
        "command": " ".join(["python", *sys.argv]),
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "variant_repeats": variant_repeats,
            "gpus": args.gpus,
            "lanes": args.lanes,
            "length_mixes": args.length_mix,
            "repeats_are": "separate worker processes",
        },
        "length_mix_tables": {mix: length_mix(mix) for mix in args.length_mix},
        "lengths": {
            mix: length_summary(sample_rows(4096, 1000, mix=mix)) for mix in args.length_mix
        },
        "bf16_peak_flops": BF16_PEAK_FLOPS,
        "entries": [dict(entry) for entry in entries],
    }
    results["equality"] = check_packed_matches_padded(args.tiny)
    print("equality", results["equality"], flush=True)

    with tempfile.TemporaryDirectory() as folder:
        results["parameters"] = write_random_model(Path(folder), args.tiny)
        results["runs"] = []

        def on_done(job: dict[str, Any], measured: dict[str, Any]) -> None:
            keys = ("name", "mix", "repeat", "lane")
            run = {key: job.get(key) for key in keys} | measured
            if "real_tokens_per_s" in run:
                flops = 6 * results["parameters"] * run["real_tokens_per_s"]
                run["mfu"] = flops / BF16_PEAK_FLOPS / run.get("processes", 1)
            results["runs"].append(run)
            collate(results)
            results["elapsed_seconds"] = time.monotonic() - started
            if args.out:
                args.out.write_text(json.dumps(results, indent=2, default=str))
            print(run_line(run), flush=True)

        jobs = plan_jobs(entries, args.length_mix, args.repeats, variant_repeats)
        run_jobs(
            jobs,
            lambda job: worker_command(job, folder, args),
            on_done,
            lanes=args.lanes,
            lane_env=lane_env_for(args.lanes),
            timeout=args.recipe_timeout,
            deadline=None if args.time_budget is None else started + args.time_budget,
        )
    collate(results)
    results["elapsed_seconds"] = time.monotonic() - started
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    print(table(results))


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def run_line(run: dict[str, Any]) -> str:
    head = f"{run['mix']} {run['name']} #{run['repeat'] + 1} (lane {run['lane']})"
    if "error" in run:
        return f"{head}: failed, {run['error']}"
    steps = ", ".join(f"{s:.2f}" for s in run["step_seconds"])
    return (
        f"{head}: {run['real_tokens_per_s']:,.0f} real tok/s; steps [{steps}] s; peak "
        f"{_fmt(run['peak_allocated_gib'])} / {_fmt(run['peak_reserved_gib'])} GiB; "
        f"{run['wall_seconds']:.0f} s in all"
    )


def table(results: dict[str, Any]) -> str:
    lines = [f"device: {results['device']}; {results['versions']}"]
    for mix, by_entry in results["summary"].items():
        lengths = results["lengths"][mix]
        ratios = results["speedup_real_tokens"][mix]
        lines += [
            "",
            f"length mix {mix} (median row {lengths['median_tokens']:.0f} tokens, "
            f"mean {lengths['mean_tokens']:.0f}); medians over runs, [min-max]:",
            "| entry | runs | real tok/s | s/step | / padded (worst-best) | peak alloc GiB "
            "| peak reserved GiB | MFU | loss (first / last) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in by_entry.items():
            runs = f"{entry['runs'] - entry['failed']}/{entry['runs']}"
            if "real_tokens_per_s" not in entry:
                lines.append(f"| {name} | {runs} | failed | | | | | | |")
                continue
            rate, step = entry["real_tokens_per_s"], entry["timed_step_seconds"]
            ratio = ratios.get(name)
            lines.append(
                f"| {name} | {runs} | {rate['median']:,.0f} [{rate['min']:,.0f}-"
                f"{rate['max']:,.0f}] | {step['median']:.3f} [{step['min']:.3f}-"
                f"{step['max']:.3f}] | "
                + (
                    f"{ratio['median_ratio']:.2f}x ({ratio['worst_ratio']:.2f}-"
                    f"{ratio['best_ratio']:.2f})"
                    if ratio
                    else "-"
                )
                + f" | {_fmt(entry['peak_allocated_gib'])} | {_fmt(entry['peak_reserved_gib'])} "
                f"| {entry['mfu']:.1%} | {entry['loss_first_last'][0]:.4f} / "
                f"{entry['loss_first_last'][1]:.4f} |"
            )
        for run in results["runs"]:  # the seed's variance: every step of every run
            if run["mix"] == mix and run["name"] == "padded" and "step_seconds" in run:
                lines.append(padded_line(run))
        lines += data_parallel_lines(results.get("data_parallel", {}).get(mix, {}))
    return "\n".join(lines)


def data_parallel_lines(compared: dict[str, Any]) -> list[str]:
    lines = []
    for name, entry in compared.items():
        head = f"{name} on {entry['processes']} GPUs against 1 (same micro-batch per GPU): "
        if "speedup" in entry:
            head += (
                f"{entry['real_tokens_per_s']:,.0f} against "
                f"{entry['one_gpu_real_tokens_per_s']:,.0f} real tok/s, "
                f"{entry['speedup']:.2f}x, scaling efficiency {entry['scaling_efficiency']:.0%}"
            )
        else:
            head += "a run failed"
        if entry.get("max_abs_loss_difference") is not None:
            head += f"; per-step losses differ by at most {entry['max_abs_loss_difference']:.2g}"
        lines.append(head)
    return lines


def padded_line(run: dict[str, Any]) -> str:
    samples = run["device_samples"]
    trend = run["timed_step_trend"]
    busy = [b for b in samples.get("busy_pct", [])[1:] if b is not None]
    means = [c for c in samples.get("sm_clock_mhz", []) if c is not None]
    lows = [c for c in samples.get("sm_clock_min", []) if c is not None]
    retries = samples.get("num_alloc_retries") or [None]
    ooms = samples.get("num_ooms") or [None]
    return (
        f"padded #{run['repeat'] + 1} (gpu {run['gpu']}): steps "
        f"[{', '.join(f'{s:.2f}' for s in run['step_seconds'])}] s, timed trend "
        f"{_fmt(trend['slope_s_per_step'], '+.3f')} s/step (last/first "
        f"{_fmt(trend['last_over_first'])}), GPU busy "
        + (f"{statistics.fmean(busy):.0f}%" if busy else "-")
        + " in steps 2+, SM clock "
        + (f"mean {statistics.fmean(means):.0f}, lowest {min(lows):.0f} MHz" if lows else "-")
        + f", alloc retries {retries[-1]}, OOMs {ooms[-1]}"
    )


if __name__ == "__main__":
    main()
