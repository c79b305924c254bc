"""Issue 5: QLoRA training throughput on one GPU, the seed's recipe (``padded``) against ``packed``.

Builds the Gemma-2-2B architecture with random weights, quantizes it to NF4 (double quant) and
trains LoRA through the project's own trainer (``build_trainer``, recipe and LoRA settings from
``conf/base/parameters_train_qlora.yml``) on rows whose lengths follow the real data mix
(``LENGTH_MIX``). Each recipe runs in its own process, so peak memory and compile caches are its
own. Before that, it checks on the device that the packed path's loss and gradients match the
plain padded eager forward on a fixed batch (a 2-layer model of the same shapes).

    python benchmarks/train_throughput.py --out results.json           # on the GPU
    python benchmarks/train_throughput.py --tiny --steps 1 --warmup 1  # CPU smoke test
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset
from tokenizers import Tokenizer, models
from transformers import Gemma2Config, Gemma2ForCausalLM, PreTrainedTokenizerFast, TrainerCallback

from gemma_pipeline.config import ModelParams, TrainQloraParams
from gemma_pipeline.prompting import IGNORE_INDEX
from gemma_pipeline.training.data import (
    CompletionCollator,
    PackingCollator,
    real_token_count,
)
from gemma_pipeline.training.kernels import (
    PACKED_ATTENTION,
    allow_shape_changes,
    apply_fused_kernels,
)
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
MAX_LENGTH = 512


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


def sample_rows(n: int, vocab_size: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` tokenized rows (random ids) whose lengths follow ``LENGTH_MIX``."""
    generator = torch.Generator().manual_seed(seed)
    sources = list(LENGTH_MIX)
    shares = torch.tensor([LENGTH_MIX[name][0] for name in sources])
    picks = torch.multinomial(shares, n, replacement=True, generator=generator).tolist()

    def lognormal(median: float, sigma: float) -> int:
        return round(median * math.exp(sigma * torch.randn((), generator=generator).item()))

    rows = []
    for index, pick in enumerate(picks):
        _, prompt_shape, completion_shape = LENGTH_MIX[sources[pick]]
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


def recipe_params(recipe: str, steps: int, checkpoint_dir: str) -> TrainQloraParams:
    """conf/base's training parameters, with the recipe and a short run."""
    raw = yaml.safe_load((ROOT / "conf/base/parameters_train_qlora.yml").read_text())
    values = raw["train_qlora"] | {
        "recipe": recipe,
        "max_steps": steps,
        "logging_steps": 1,
        "save_steps": 10**6,  # no checkpoint inside the timed steps
        "checkpoint_dir": checkpoint_dir,
    }
    return TrainQloraParams.model_validate(values)


def model_params(model_dir: Path) -> ModelParams:
    raw = yaml.safe_load((ROOT / "conf/base/parameters.yml").read_text())["model"]
    return ModelParams.model_validate(raw | {"name_or_path": str(model_dir)})


class StepClock(TrainerCallback):
    """Wall time at the end of every optimizer step (after the device has finished it)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


def run_recipe(recipe: str, model_dir: Path, steps: int, warmup: int, seed: int) -> dict:
    """Train ``warmup + steps`` optimizer steps; time and count tokens of the last ``steps``."""
    total = warmup + steps
    with tempfile.TemporaryDirectory() as checkpoints:
        params = recipe_params(recipe, total, checkpoints)
        rows = sample_rows(
            total * params.examples_per_step, vocab_size=_vocab(model_dir), seed=seed
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
        trainer.train()
    seconds = clock.ends[total - 1] - clock.ends[warmup - 1]
    real = sum(tokens[step][0] for step in range(warmup, total))
    padded = sum(tokens[step][1] for step in range(warmup, total))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    gib = 2**30
    return {
        "recipe": recipe,
        "setup": setup["setup"] | {"params": None},
        "examples_per_step": params.examples_per_step,
        "timed_steps": steps,
        "warmup_steps": warmup,
        "seconds": seconds,
        "step_seconds": [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)],
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
    fused = _cuda() and apply_fused_kernels(packed_model)
    if _cuda():  # the packed recipe's attention on the GPU
        allow_shape_changes()
        packed_model.set_attn_implementation(PACKED_ATTENTION["cuda"])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["padded", "packed"])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per recipe")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiles)")
    parser.add_argument("--tiny", action="store_true", help="tiny model: a CPU smoke test")
    parser.add_argument("--recipe-timeout", type=float, default=None, help="seconds per recipe")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    parser.add_argument(
        "--worker", nargs=2, metavar=("RECIPE", "MODEL_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.worker:
        recipe, model_dir = args.worker
        print(json.dumps(run_recipe(recipe, Path(model_dir), args.steps, args.warmup, seed=0)))
        return

    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if _cuda() else "cpu",
        "versions": versions(),
        "command": " ".join(["python", *sys.argv]),
        "lengths": length_summary(sample_rows(4096, 1000)),
        "length_mix": LENGTH_MIX,
        "bf16_peak_flops": BF16_PEAK_FLOPS,
    }
    results["equality"] = check_packed_matches_padded(args.tiny)
    print("equality", results["equality"], flush=True)

    with tempfile.TemporaryDirectory() as folder:
        results["parameters"] = write_random_model(Path(folder), args.tiny)
        results["recipes"] = {}
        for recipe in args.recipes:
            command = [sys.executable, __file__, "--steps", str(args.steps)]
            command += ["--warmup", str(args.warmup), "--worker", recipe, folder]
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=args.recipe_timeout
                )
            except subprocess.TimeoutExpired:
                results["recipes"][recipe] = {"error": f"over {args.recipe_timeout} s"}
                print(recipe, "timed out", flush=True)
                continue
            if done.returncode != 0:
                print(done.stderr[-6000:], file=sys.stderr)
                results["recipes"][recipe] = {"error": done.stderr[-3000:]}
                continue
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            flops = 6 * results["parameters"] * measured["real_tokens_per_s"]
            measured["mfu"] = flops / BF16_PEAK_FLOPS
            results["recipes"][recipe] = measured
            print(recipe, {k: v for k, v in measured.items() if k != "setup"}, flush=True)

    padded = results["recipes"].get("padded", {})
    if "real_tokens_per_s" in padded:
        results["speedup_real_tokens"] = {
            name: measured["real_tokens_per_s"] / padded["real_tokens_per_s"]
            for name, measured in results["recipes"].items()
            if name != "padded" and "real_tokens_per_s" in measured
        }
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    print(table(results))


def table(results: dict[str, Any]) -> str:
    lines = [
        f"device: {results['device']}; {results['versions']}",
        "| recipe | real tok/s | padded tok/s | peak alloc GiB | peak reserved GiB | MFU | "
        "loss (first / last step) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, measured in results["recipes"].items():
        if "error" in measured:
            lines.append(f"| {name} | failed | | | | | |")
            continue
        peak = measured["peak_allocated_gib"]
        reserved = measured["peak_reserved_gib"]
        lines.append(
            f"| {name} | {measured['real_tokens_per_s']:,.0f} | "
            f"{measured['padded_tokens_per_s']:,.0f} | "
            f"{'-' if peak is None else f'{peak:.2f}'} | "
            f"{'-' if reserved is None else f'{reserved:.2f}'} | {measured['mfu']:.1%} | "
            f"{measured['losses'][0]:.4f} / {measured['losses'][-1]:.4f} |"
        )
    for name, ratio in results.get("speedup_real_tokens", {}).items():
        lines.append(f"{name} / padded real tokens/s: {ratio:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
