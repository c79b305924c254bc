"""The project's benchmark scores against lm-evaluation-harness's, on the same model and rows.

The rows are raw sample files on disk: lm-eval reads them through its registered task configs
(dataset pointed at the files); the project reads them as its ingest does
(``sources.ingest.read_benchmarks``, loader: local). Used by the fidelity tests and by
``python -m gemma_pipeline.evaluation.fidelity``, which prints the comparison table of
docs/evaluation.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gemma_pipeline.config import IngestParams
from gemma_pipeline.evaluation.benchmarks import score_benchmark, task_metrics
from gemma_pipeline.evaluation.lm_eval_bridge import run_tasks, task_config
from gemma_pipeline.sources import generate_gsm8k_raw, generate_mathqa_raw, generate_mmlu_raw
from gemma_pipeline.sources.ingest import read_benchmarks


def _write(frame: pd.DataFrame, path: Path) -> str:
    with path.open("w", encoding="utf-8") as handle:
        for record in frame.to_dict(orient="records"):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return str(path)


def write_benchmark_files(folder: Path, sizes: dict[str, int], seed: int = 0) -> dict:
    """Raw files per task and split, plus each task's lm-eval configs reading them."""
    mmlu_test = generate_mmlu_raw("test", sizes["mmlu"], seed)
    mmlu_dev = generate_mmlu_raw("validation", 100, seed)
    files = {
        "mmlu": {
            "test": _write(mmlu_test, folder / "mmlu_test.jsonl"),
            "fewshot": _write(mmlu_dev, folder / "mmlu_dev.jsonl"),
        },
        "mathqa": {
            "test": _write(generate_mathqa_raw("test", sizes["mathqa"], seed), folder / "mq.jsonl")
        },
        "gsm8k": {
            "test": _write(generate_gsm8k_raw("test", sizes["gsm8k"], seed), folder / "g_t.jsonl"),
            "fewshot": _write(generate_gsm8k_raw("train", 60, seed), folder / "g_tr.jsonl"),
        },
    }
    configs: dict[str, list[dict]] = {"mmlu": [], "mathqa": [], "gsm8k": []}
    for subject in dict.fromkeys(mmlu_test["subject"]):  # lm-eval: one task per subject
        test = _write(mmlu_test[mmlu_test["subject"] == subject], folder / f"t_{subject}.jsonl")
        dev = _write(mmlu_dev[mmlu_dev["subject"] == subject], folder / f"d_{subject}.jsonl")
        configs["mmlu"].append(task_config(f"mmlu_{subject}", {"test": test, "dev": dev}))
    configs["mathqa"].append(task_config("mathqa", {"test": files["mathqa"]["test"]}))
    configs["gsm8k"].append(
        task_config("gsm8k", {"test": files["gsm8k"]["test"], "train": files["gsm8k"]["fewshot"]})
    )
    return {"files": files, "configs": configs}


def ingest_same_rows(files: dict) -> pd.DataFrame:
    """The benchmark rows of ``files`` as the pipeline ingests them; every row must be usable,
    or the two harnesses would not score the same documents."""
    sources = {
        task: {"task": task, "loader": "local", "local": splits} for task, splits in files.items()
    }
    params = IngestParams.model_validate({"sources": {}, "benchmarks": sources})
    questions, rejected, _ = read_benchmarks(params)
    if not rejected.empty:
        raise ValueError(
            "ingest rejected rows that lm-eval would score:\n" + rejected.to_string(max_rows=10)
        )
    return questions


#: (task, shots) compared, and lm-eval's metric keys for each of ours.
COMPARED = [("mmlu", 0), ("mmlu", 5), ("mathqa", 0), ("gsm8k", 5)]
METRICS = {
    "mmlu": {"acc": "acc,none"},
    "mathqa": {"acc": "acc,none", "acc_norm": "acc_norm,none"},
    "gsm8k": {
        "exact_match,strict-match": "exact_match,strict-match",
        "exact_match,flexible-extract": "exact_match,flexible-extract",
    },
}


def _lm_eval_means(results: dict, metric: str) -> tuple[float, int]:
    """Size-weighted mean of ``metric`` over lm-eval's tasks (MMLU: one task per subject)."""
    total = weight = 0.0
    for task, values in results["results"].items():
        n = len({sample["doc_id"] for sample in results["samples"][task]})  # one per filter
        total += values[metric] * n
        weight += n
    return total / weight, int(weight)


def compare_with_lm_eval(
    model, tokenizer, folder: Path, sizes: dict[str, int], batch_size: int = 8
) -> list[dict]:
    """One row per (task, shots, metric): ours, lm-eval's, and the difference in points."""
    setup = write_benchmark_files(folder, sizes)
    questions = ingest_same_rows(setup["files"])
    rows = []
    for task, shots in COMPARED:
        theirs = run_tasks(
            model,
            tokenizer,
            setup["configs"][task],
            batch_size=batch_size,
            num_fewshot=shots if task == "mmlu" else None,
            log_samples=True,
        )
        scores = score_benchmark(model, tokenizer, questions, task, shots, "plain")
        ours = {
            record["metric"]: record
            for record in task_metrics(task, scores)
            if record["level"] == "task"
        }
        for metric, their_key in METRICS[task].items():
            their_value, n = _lm_eval_means(theirs, their_key)
            rows.append(
                {
                    "task": task,
                    "shots": shots,
                    "metric": metric,
                    "n": n,
                    "ours": ours[metric]["value"],
                    "lm_eval": their_value,
                    "difference_points": 100 * (ours[metric]["value"] - their_value),
                }
            )
    return rows


def main() -> None:
    """``python -m gemma_pipeline.evaluation.fidelity``: the embedded model, both harnesses."""
    import argparse
    import tempfile

    from gemma_pipeline.modeling import load_causal_lm, load_tokenizer

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--mmlu", type=int, default=100)
    parser.add_argument("--mathqa", type=int, default=100)
    parser.add_argument("--gsm8k", type=int, default=30)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    name = "embedded:gemma3-270m"
    cache = "data/06_models/embedded_gemma3_270m"
    tokenizer = load_tokenizer(name, embedded_cache_dir=cache)
    model = load_causal_lm(name, embedded_cache_dir=cache, dtype=args.dtype).eval()
    sizes = {"mmlu": args.mmlu, "mathqa": args.mathqa, "gsm8k": args.gsm8k}
    with tempfile.TemporaryDirectory() as folder:
        rows = compare_with_lm_eval(model, tokenizer, Path(folder), sizes)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
