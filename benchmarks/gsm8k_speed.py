"""Issue 13: GSM8K 5-shot generation, the project's engine against lm-eval's HF backend.

Builds the Gemma-2-2B architecture with random weights (bf16, eager attention: the softcaps
stay) and a synthetic GSM8K in openai/gsm8k's schema (question, "reasoning #### number") with
the real test split's size (1,319 questions) and lengths like it, then, in one process:

1. the project's engine (``evaluation/engine.py``: the 5-shot block once, rows that stop leave
   the batch) on every question, lm-eval's plain 5-shot format and stop sequences, greedy, at
   most 256 new tokens, ``--batch-size`` rows at a time;
2. lm-eval 0.4's HF backend (``HFLM``, batch 64) on the first ``--lm-eval-questions``, on the
   same model object; and the project's engine again on those, at lm-eval's batch size;

and writes seconds, new tokens/s, the share of identical texts and both exact-match scores.
Random weights never produce a stop sequence, so every row runs the full 256 tokens: these are
worst-case times, and exact match is 0 on both sides.

    python benchmarks/gsm8k_speed.py --tokenizer DIR --out results.json
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import transformers
from transformers import AutoTokenizer

from gemma_pipeline.evaluation.benchmarks import score_benchmark
from gemma_pipeline.sources import normalize

WORDS = [
    "the",
    "of",
    "a",
    "to",
    "in",
    "and",
    "is",
    "was",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "it",
    "be",
    "this",
    "are",
    "apples",
    "dollars",
    "hours",
    "miles",
    "students",
    "books",
    "boxes",
    "cookies",
    "tickets",
]


def synthetic_gsm8k_raw(n: int, seed: int) -> pd.DataFrame:
    """Rows in openai/gsm8k's schema: a ~45-word question, three steps and ``#### number``."""
    rng = random.Random(seed)

    def text(mean: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(max(5, int(rng.gauss(mean, mean / 3)))))

    def row() -> dict:
        steps = "\n".join(f"{text(12)} = <<{rng.randint(1, 99)}>>" for _ in range(3))
        return {"question": text(45) + "?", "answer": f"{steps}\n#### {rng.randint(1, 999)}"}

    return pd.DataFrame([row() for _ in range(n)])


def lm_eval_gsm8k(model, tokenizer, test: pd.DataFrame, train: pd.DataFrame, batch_size: int):
    """lm-eval's own ``gsm8k`` task on these rows: (seconds, texts in test order, exact match)."""
    from gemma_pipeline.evaluation.lm_eval_bridge import run_tasks, task_config

    with tempfile.TemporaryDirectory() as folder:
        files = {}
        for split, frame in (("test", test), ("train", train)):
            files[split] = str(Path(folder) / f"{split}.jsonl")
            frame.to_json(files[split], orient="records", lines=True)
        started = time.perf_counter()
        results = run_tasks(
            model, tokenizer, [task_config("gsm8k", files)], batch_size=batch_size, log_samples=True
        )
        seconds = time.perf_counter() - started
    # One sample per (document, filter): the generation is the same in each.
    by_doc = {sample["doc_id"]: sample for sample in results["samples"]["gsm8k"]}
    samples = [by_doc[i] for i in sorted(by_doc)]
    metrics = results["results"]["gsm8k"]
    exact = {k.split(",")[1]: v for k, v in metrics.items() if k.startswith("exact_match,")}
    return seconds, [sample["resps"][0][0] for sample in samples], exact


def batch_scaling(ours, test: pd.DataFrame, sizes: list[int], device: str) -> dict:
    """Seconds per decoding step (256 steps a batch) by batch size; kernels of the largest."""
    from torch.profiler import ProfilerActivity, profile

    result: dict = {}
    for size in sizes:
        _, seconds = ours(test.head(size), size, f"batch {size}")
        result[str(size)] = {"seconds": seconds, "ms_per_step": 1000 * seconds / 256}
        print(size, result[str(size)], flush=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        ours(test.head(max(sizes)), max(sizes), "profiled")
    events = prof.key_averages()
    for kind in ("device", "cpu"):
        field = f"self_{kind}_time_total"
        ranked = sorted(events, key=lambda e: -getattr(e, field, 0))
        total = sum(getattr(e, field, 0) for e in ranked) or 1
        result[f"top_{kind}"] = [
            [e.key[:90], round(100 * getattr(e, field, 0) / total, 1), e.count] for e in ranked[:15]
        ]
        result[f"total_{kind}_s"] = total / 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--questions", type=int, default=1319)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lm-eval-questions", type=int, default=128)
    parser.add_argument("--lm-eval-batch-size", type=int, default=64)
    parser.add_argument("--tiny", action="store_true", help="a tiny random model: a CPU smoke test")
    parser.add_argument(
        "--scaling",
        type=int,
        nargs="*",
        default=[],
        help="instead of the comparison: one batch of each size, timed, and the CUDA kernels' "
        "shares of the largest",
    )
    args = parser.parse_args()

    from eval_speed import gemma2_2b, timed  # the same random Gemma-2-2B and timing

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    raw_test = synthetic_gsm8k_raw(args.questions, seed=0)
    raw_train = synthetic_gsm8k_raw(60, seed=1)
    test = normalize("gsm8k", raw_test, source="gsm8k", split="test", origin="test",
                     keep_duplicates=True)[0]  # fmt: skip
    fewshot = normalize("gsm8k", raw_train, source="gsm8k", split="fewshot", origin="fewshot",
                        keep_duplicates=True)[0]  # fmt: skip
    model = gemma2_2b(device, tiny=args.tiny)
    report: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "questions": args.questions,
        "batch_size": args.batch_size,
        "max_new_tokens": 256,
    }

    def ours(frame: pd.DataFrame, batch_size: int, label: str) -> tuple[pd.DataFrame, float]:
        questions = pd.concat([frame, fewshot], ignore_index=True)
        return timed(
            device,
            lambda: score_benchmark(
                model, tokenizer, questions, "gsm8k", 5, "plain",
                generation_batch_size=batch_size, label=label,
            ),
        )  # fmt: skip

    def exact_match(scores: pd.DataFrame) -> dict[str, float]:
        return {c: float(scores[c].mean()) for c in scores if c.startswith("exact_match")}

    ours(test.head(8), args.batch_size, "warm-up")
    if args.scaling:
        report["scaling"] = batch_scaling(ours, test, args.scaling, device)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report, indent=1))
        return
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    scores, seconds = ours(test, args.batch_size, "full")
    report["ours_full"] = {
        "seconds": seconds,
        "questions_per_s": args.questions / seconds,
        "new_tokens_per_s": sum(map(len, tokenizer(scores["output"].tolist())["input_ids"]))
        / seconds,
        "exact_match": exact_match(scores),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }
    print(json.dumps(report, indent=1), flush=True)

    n = args.lm_eval_questions
    subset_scores, subset_seconds = ours(test.head(n), args.lm_eval_batch_size, "subset")
    theirs_seconds, theirs, theirs_exact = lm_eval_gsm8k(
        model, tokenizer, raw_test.head(n), raw_train, args.lm_eval_batch_size
    )
    full_texts = scores["output"].tolist()[:n]
    subset_texts = subset_scores["output"].tolist()
    import lm_eval

    report["versions"]["lm_eval"] = lm_eval.__version__
    report["subset"] = {
        "questions": n,
        "lm_eval_seconds": theirs_seconds,
        "ours_seconds_same_batch": subset_seconds,
        "speedup_same_questions_same_batch": theirs_seconds / subset_seconds,
        # lm-eval's seconds per question against ours over the whole test at our batch size.
        "speedup_per_question": (theirs_seconds / n) / (seconds / args.questions),
        "identical_texts_full_run": sum(
            a == b for a, b in zip(full_texts, theirs, strict=True)
        ) / n,
        "identical_texts_same_batch": sum(
            a == b for a, b in zip(subset_texts, theirs, strict=True)
        ) / n,
        "exact_match_lm_eval": theirs_exact,
        "exact_match_ours_full_run": exact_match(scores.head(n)),
        "exact_match_ours_same_batch": exact_match(subset_scores),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
