"""MMLU 5-shot scoring speed: the project's evaluator against lm-evaluation-harness's HF backend.

Builds the Gemma-2-2B architecture with random weights (bf16, eager attention so Gemma-2's
softcapping is kept), a synthetic MMLU in cais/mmlu's schema with the real test set's size
(14,042 questions over 57 subjects, 5 dev rows each) and long-tailed question lengths, then:

1. the project's evaluator on the full test set, 5-shot, lm-eval's plain format;
2. lm-eval 0.4's HF backend (``HFLM``, batch size 16) and the project's evaluator on the same
   subset of subjects, on the same model object, in the same process;

and writes seconds, tokens/s and the agreement of per-question predictions to a JSON file.

    python benchmarks/eval_speed.py --tokenizer DIR --out results.json [--lm-eval-subjects 6]
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
from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

from gemma_pipeline.evaluation.benchmarks import score_benchmark, task_docs
from gemma_pipeline.evaluation.tasks.mmlu import CATEGORIES
from gemma_pipeline.sources import normalize

#: Questions per subject in the real MMLU test split (14,042 in all).
TEST_SIZES = {
    "professional_law": 1534, "moral_scenarios": 895, "miscellaneous": 783,
    "professional_psychology": 612, "high_school_psychology": 545,
    "high_school_macroeconomics": 390, "elementary_mathematics": 378, "moral_disputes": 346,
    "prehistory": 324, "philosophy": 311, "high_school_biology": 310, "nutrition": 306,
    "professional_accounting": 282, "professional_medicine": 272,
    "high_school_mathematics": 270, "clinical_knowledge": 265, "security_studies": 245,
    "high_school_microeconomics": 238, "high_school_world_history": 237,
    "conceptual_physics": 235, "marketing": 234, "human_aging": 223,
    "high_school_statistics": 216, "high_school_us_history": 204,
    "high_school_chemistry": 203, "sociology": 201, "high_school_geography": 198,
    "high_school_government_and_politics": 193, "college_medicine": 173,
    "world_religions": 171, "virology": 166, "high_school_european_history": 165,
    "logical_fallacies": 163, "astronomy": 152, "high_school_physics": 151,
    "electrical_engineering": 145, "college_biology": 144, "anatomy": 135,
    "human_sexuality": 131, "formal_logic": 126, "international_law": 121,
    "econometrics": 114, "machine_learning": 112, "public_relations": 110,
    "jurisprudence": 108, "management": 103, "college_physics": 102,
    "abstract_algebra": 100, "business_ethics": 100, "college_chemistry": 100,
    "college_computer_science": 100, "college_mathematics": 100, "computer_security": 100,
    "global_facts": 100, "high_school_computer_science": 100, "medical_genetics": 100,
    "us_foreign_policy": 100,
}  # fmt: skip
#: Mean question length in words: passages make history, law and some others long.
LONG_QUESTIONS = {
    "high_school_european_history": 280, "high_school_us_history": 230,
    "high_school_world_history": 250, "professional_law": 170, "security_studies": 60,
    "professional_medicine": 120, "professional_accounting": 60, "professional_psychology": 50,
    "moral_scenarios": 45, "formal_logic": 40, "college_medicine": 60,
}  # fmt: skip
WORDS = [
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "they", "you", "were", "her", "she", "there", "been", "one", "all", "we", "their", "has",
    "would", "when", "what", "will", "more", "if", "no", "out", "so", "said", "who", "can",
    "about", "up", "its", "into", "than", "them", "only", "other", "time", "new", "some",
    "could", "these", "two", "may", "first", "then", "do", "any", "like", "my", "now", "over",
    "such", "our", "man", "me", "even", "most", "made", "after", "also", "did", "many",
    "before", "must", "through", "back", "years", "where", "much", "your", "way", "well",
    "down", "should", "because", "each", "just", "those", "people", "how", "too", "little",
    "state", "good", "very", "make", "world", "still", "own", "see", "men", "work", "long",
    "get", "here", "between", "both", "life", "being", "under", "never", "day", "same",
    "another", "know", "while", "last", "might", "us", "great", "old", "year", "off", "come",
    "since", "against", "go", "came", "right", "used", "take", "three", "states", "himself",
    "few", "house", "use", "during", "without", "again", "place", "american", "around",
    "however", "home", "small", "found", "thought", "went", "say", "part", "once", "general",
    "high", "upon", "school", "every", "court", "law", "patient", "cell", "energy", "market",
    "theory", "price", "function", "value", "reaction", "government",
]  # fmt: skip


def synthetic_mmlu(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(test, dev) frames in cais/mmlu's flat schema; invented text, realistic lengths."""
    rng = random.Random(seed)

    def text(mean_words: float) -> str:
        n = max(3, int(rng.lognormvariate(0, 0.45) * mean_words))
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "?"

    def rows(subject: str, n: int) -> list[dict]:
        mean = LONG_QUESTIONS.get(subject, 28)
        option_mean = 14 if subject in LONG_QUESTIONS else 5
        return [
            {
                "question": text(mean),
                "subject": subject,
                "choices": [text(option_mean)[:-1] for _ in range(4)],
                "answer": rng.randrange(4),
            }
            for _ in range(n)
        ]

    test = [row for subject, n in TEST_SIZES.items() for row in rows(subject, n)]
    dev = [row for subject in TEST_SIZES for row in rows(subject, 5)]
    return pd.DataFrame(test), pd.DataFrame(dev)


def benchmark_questions(test: pd.DataFrame, dev: pd.DataFrame) -> pd.DataFrame:
    parts = [
        normalize("mmlu", frame, source="mmlu", split=split, origin=split, keep_duplicates=True)[0]
        for split, frame in (("test", test), ("fewshot", dev))
    ]
    return pd.concat(parts, ignore_index=True)


def gemma2_2b(device: str, tiny: bool = False) -> Gemma2ForCausalLM:
    """Gemma-2-2B's architecture, random weights; ``tiny``: 2 narrow layers (CPU smoke tests)."""
    shapes = dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, head_dim=256)
    if tiny:
        shapes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, head_dim=16)
    config = Gemma2Config(
        vocab_size=256000, **shapes, num_attention_heads=8, num_key_value_heads=4,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096,
        max_position_embeddings=8192, query_pre_attn_scalar=256,
        attn_implementation="eager", bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model = Gemma2ForCausalLM(config).to(torch.bfloat16)
    return model.eval()


def timed(device: str, work):
    """``work()``'s result and its wall seconds, the device synchronized on both sides."""
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = work()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def prompt_tokens(tokenizer, docs) -> int:
    """Tokens of every question's full prompt (what an evaluator without sharing processes)."""
    contexts = [doc.requests[0].context for doc in docs]
    return sum(len(ids) for ids in tokenizer(contexts)["input_ids"])


def lm_eval_subset(model, tokenizer, test, dev, subjects, folder: Path, batch_size: int) -> dict:
    from gemma_pipeline.evaluation.lm_eval_bridge import run_tasks, task_config

    configs = []
    for subject in subjects:
        files = {}
        for split, frame in (("test", test), ("dev", dev)):
            path = folder / f"{subject}_{split}.jsonl"
            frame[frame["subject"] == subject].to_json(path, orient="records", lines=True)
            files[split] = str(path)
        configs.append(task_config(f"mmlu_{subject}", files, num_fewshot=5))
    started = time.perf_counter()
    results = run_tasks(model, tokenizer, configs, batch_size=batch_size, log_samples=True)
    seconds = time.perf_counter() - started
    predictions = {}
    for subject in subjects:
        samples = sorted(results["samples"][f"mmlu_{subject}"], key=lambda s: s["doc_id"])
        predictions[subject] = [
            max(range(4), key=lambda i: s["filtered_resps"][i][0]) for s in samples
        ]
    return {"seconds": seconds, "predictions": predictions}


def profile_attention(model, questions: pd.DataFrame, ours) -> dict:
    """Where the GPU time goes on three subjects, per attention implementation."""
    from torch.profiler import ProfilerActivity, profile

    subset = questions[questions["subject"].isin(["college_physics", "virology", "prehistory"])]
    result, letters = {}, {}
    for attn in ("eager", "flex_attention"):
        try:
            model.set_attn_implementation(attn)
            ours(subset, f"{attn} warm-up")  # flex compiles its kernels on first use
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                scores, seconds = ours(subset, attn)
        except Exception as error:  # a first look: record what failed and go on
            result[attn] = {"error": repr(error)[:500]}
            continue
        events = sorted(prof.key_averages(), key=lambda e: -getattr(e, "self_device_time_total", 0))
        total = sum(getattr(e, "self_device_time_total", 0) for e in events) or 1
        letters[attn] = scores["pred"].tolist()
        result[attn] = {
            "seconds": seconds,
            "questions": len(scores),
            "top_kernels": [
                [e.key[:80], round(100 * getattr(e, "self_device_time_total", 0) / total, 1)]
                for e in events[:12]
            ],
        }
        print(attn, json.dumps(result[attn], indent=1), flush=True)
    if len(letters) == 2:
        same = sum(a == b for a, b in zip(letters["eager"], letters["flex_attention"], strict=True))
        result["same_predictions"] = f"{same}/{len(letters['eager'])}"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True, help="folder of a Gemma tokenizer")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--lm-eval-subjects", type=int, default=10)
    parser.add_argument("--max-batch-tokens", type=int, default=131072)
    # lm-eval's "auto" sizes batches for the model's 8k context; a fixed 16 fits these prompts
    # (16 x ~1k tokens x 256k-vocabulary float32 logits, twice, is about 32 GB).
    parser.add_argument("--lm-eval-batch-size", type=int, default=16)
    parser.add_argument("--skip-lm-eval", action="store_true")
    parser.add_argument(
        "--float32-subjects",
        type=int,
        default=0,
        help="last: on this many subjects, in float32, the letters with the shared few-shot block "
        "against every question computed whole (the engine before prefix sharing)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="first: the CUDA kernels' share of time on 3 subjects, eager against flex attention "
        "(Gemma-2's softcap as flex's score modifier), and whether their letters agree",
    )
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    test, dev = synthetic_mmlu()
    questions = benchmark_questions(test, dev)
    model = gemma2_2b(device)
    report: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "questions": len(test),
    }
    docs = task_docs(questions, "mmlu", 5, "plain")
    report["prompt_tokens"] = prompt_tokens(tokenizer, docs)

    def ours(frame: pd.DataFrame, label: str) -> tuple[pd.DataFrame, float]:
        return timed(
            device,
            lambda: score_benchmark(
                model,
                tokenizer,
                frame,
                "mmlu",
                5,
                "plain",
                max_batch_tokens=args.max_batch_tokens,
                label=label,
            ),
        )

    # The first batches compile the decoder layers (CUDA): timed apart, as a one-time cost.
    _, report["warm_up_seconds"] = ours(
        questions[questions["subject"].isin(["anatomy", "astronomy"])], "warm-up"
    )
    if args.profile and device == "cuda":
        report["profile"] = profile_attention(model, questions, ours)
        print(json.dumps(report["profile"], indent=1), flush=True)
        model.set_attn_implementation("eager")
    scores, seconds = ours(questions, "full")
    report["ours_full"] = {
        "seconds": seconds,
        "questions_per_s": len(test) / seconds,
        "prompt_tokens_per_s": report["prompt_tokens"] / seconds,
        "acc": float(scores["acc"].mean()),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }
    print(json.dumps(report, indent=1), flush=True)

    if not args.skip_lm_eval:
        # The subjects of one category, smallest first, up to the requested count.
        subjects = sorted(CATEGORIES["stem"], key=lambda s: TEST_SIZES[s])[: args.lm_eval_subjects]
        subset = questions[questions["subject"].isin(subjects)]
        subset_docs = task_docs(subset, "mmlu", 5, "plain")
        subset_scores, subset_seconds = ours(subset, "subset")
        with tempfile.TemporaryDirectory() as folder:
            theirs = lm_eval_subset(
                model, tokenizer, test, dev, subjects, Path(folder), args.lm_eval_batch_size
            )
        agree = total = 0
        for subject in subjects:
            mine = subset_scores[subset_scores["subject"] == subject]["pred"].tolist()
            agree += sum(a == b for a, b in zip(mine, theirs["predictions"][subject], strict=True))
            total += len(mine)
        report["subset"] = {
            "subjects": subjects,
            "questions": len(subset_docs),
            "prompt_tokens": prompt_tokens(tokenizer, subset_docs),
            "ours_seconds": subset_seconds,
            "lm_eval_seconds": theirs["seconds"],
            "speedup": theirs["seconds"] / subset_seconds,
            "prediction_agreement": agree / total,
        }
        import lm_eval

        report["versions"]["lm_eval"] = lm_eval.__version__
    if args.float32_subjects:
        report["float32_check"] = same_letters_unshared(
            model.float(), questions, sorted(TEST_SIZES)[: args.float32_subjects], ours
        )
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


def same_letters_unshared(model, questions: pd.DataFrame, subjects: list[str], ours) -> dict:
    """Predicted letters of the engine (shared block, compiled layers on CUDA) against every
    request computed whole and eagerly."""
    import dataclasses

    from gemma_pipeline.evaluation import benchmarks

    subset = questions[questions["subject"].isin(subjects)]
    shared, _ = ours(subset, "float32 shared")
    engine_loglikelihood = benchmarks.loglikelihood

    def unshared(model, tokenizer, requests, **kwargs):
        whole = [dataclasses.replace(r, shared_prefix="") for r in requests]
        return engine_loglikelihood(model, tokenizer, whole, **kwargs)

    # The reference is the engine as it was before the compiled layers: eager, whole prompts.
    benchmarks.loglikelihood = unshared
    torch._dynamo.config.disable = True
    try:
        whole, _ = ours(subset, "float32 whole")
    finally:
        benchmarks.loglikelihood = engine_loglikelihood
        torch._dynamo.config.disable = False
    same = int((shared["pred"].to_numpy() == whole["pred"].to_numpy()).sum())
    return {"subjects": subjects, "questions": len(shared), "same_letters": same}


if __name__ == "__main__":
    main()
