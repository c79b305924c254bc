"""Issue 13: GSM8K 5-shot generation speed, the engine as it is against a static KV cache.

Builds the Gemma-2-2B architecture with random weights (bf16, eager attention: the softcaps
stay) and a synthetic GSM8K in openai/gsm8k's schema (question, "reasoning #### number")
with lengths like the real test set's, then generates greedy answers to the same 5-shot
prompts (lm-eval's format and stop sequences, at most 256 new tokens) twice:

1. ``generate_until`` as it is (transformers' dynamic KV cache);
2. the same with ``cache_implementation="static"``, which lets transformers compile the
   decoding step (``torch.compile``) and replay it.

Random weights never produce a stop sequence, so every row runs the full 256 tokens: these are
worst-case times. It writes seconds, tokens/s and the share of identical texts to a JSON file.

    python benchmarks/gsm8k_speed.py --tokenizer DIR --out results.json [--questions 128]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
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


def synthetic_gsm8k(n_test: int, n_fewshot: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)

    def text(mean: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(max(5, int(rng.gauss(mean, mean / 3)))))

    def row() -> dict:
        steps = "\n".join(f"{text(12)} = <<{rng.randint(1, 99)}>>" for _ in range(3))
        return {"question": text(45) + "?", "answer": f"{steps}\n#### {rng.randint(1, 999)}"}

    parts = [
        normalize(
            "gsm8k", pd.DataFrame([row() for _ in range(n)]), source="gsm8k", split=split,
            origin=split, keep_duplicates=True,
        )[0]
        for split, n in (("test", n_test), ("fewshot", n_fewshot))
    ]  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from eval_speed import gemma2_2b, timed  # the same random Gemma-2-2B and timing

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    questions = synthetic_gsm8k(args.questions)
    model = gemma2_2b(device)
    report: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "questions": args.questions,
        "batch_size": args.batch_size,
    }
    plain_generate = model.generate

    def run(label: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, float]:
        return timed(
            device,
            lambda: score_benchmark(
                model,
                tokenizer,
                frame,
                "gsm8k",
                5,
                "plain",
                generation_batch_size=args.batch_size,
                label=label,
            ),
        )

    fewshot = questions[questions["split"] == "fewshot"]
    warm_up = pd.concat([questions[questions["split"] == "test"].head(8), fewshot])
    results = {}
    for variant in ("dynamic", "static"):
        model.generate = (
            plain_generate
            if variant == "dynamic"
            else functools.partial(plain_generate, cache_implementation="static")
        )
        run(f"{variant} warm-up", warm_up)
        scores, seconds = run(variant, questions)
        results[variant] = scores
        report[variant] = {
            "seconds": seconds,
            "new_tokens_per_s": args.questions * 256 / seconds,
            "exact_match": float(scores.filter(like="exact_match").iloc[:, 0].mean()),
        }
        print(variant, json.dumps(report[variant]), flush=True)
    texts = [results[v]["output"].tolist() for v in results]
    report["identical_texts"] = sum(a == b for a, b in zip(*texts, strict=True)) / args.questions
    report["speedup_static"] = report["dynamic"]["seconds"] / report["static"]["seconds"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
