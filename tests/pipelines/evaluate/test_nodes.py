import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model

from gemma_pipeline.config import EvaluateParams
from gemma_pipeline.evaluation.benchmarks import score_benchmark
from gemma_pipeline.evaluation.heldout import score_heldout
from gemma_pipeline.modeling import load_causal_lm, load_tokenizer
from gemma_pipeline.pipelines.evaluate.nodes import (
    score_benchmarks,
    score_heldout_questions,
    select_heldout_questions,
)


def tokenizer_of(model_dir):
    return load_tokenizer(str(model_dir), embedded_cache_dir="x")


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32")
    # init_lora_weights=False: a random (non-identity) adapter, so fine-tuned differs from base.
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    path = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, config).save_pretrained(path)
    return str(path)


def _prompts(tokenizer):
    rows = []
    for i, (task, n) in enumerate([("mmlu", 4), ("mmlu", 4), ("mathqa", 5), ("mmlu", 4)]):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"question {i} the cat"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for split in ("test", "train"):
            rows.append(
                {
                    "row_id": f"{split}{i}",
                    "question_id": f"{split}{i}",
                    "source": task,
                    "task": task,
                    "split": split,
                    "subject": "geo" if i % 2 else "",
                    "prompt": prompt,
                    "completion": "B. 2<end_of_turn>\n",
                    "answer": 1,
                    "answer_letter": "B",
                    "choices": [str(k) for k in range(1, n + 1)],
                }
            )
    rotated = dict(rows[0], row_id="test0/rot1")
    return pd.DataFrame([*rows, rotated])


def test_only_unrotated_held_out_questions_are_selected(tiny_tokenizer):
    selected = select_heldout_questions(_prompts(tiny_tokenizer), EvaluateParams(split="test"))
    assert sorted(selected["row_id"]) == ["test0", "test1", "test2", "test3"]
    capped = select_heldout_questions(
        _prompts(tiny_tokenizer), EvaluateParams(max_questions_per_task=1)
    )
    assert capped.groupby("task").size().to_dict() == {"mathqa": 1, "mmlu": 1}


def test_heldout_scores_base_and_adapter_on_the_same_questions(
    tiny_model_dir, tiny_tokenizer, adapter_dir
):
    prompts = _prompts(tiny_tokenizer)
    predictions = score_heldout_questions(
        prompts,
        adapter_dir,
        {"split": "test", "max_batch_tokens": 64},
        {"quantization": {"load_in_4bit": False}},
        {"name_or_path": str(tiny_model_dir), "dtype": "float32"},
    )
    base = predictions[predictions["model"] == "base"].set_index("row_id")
    tuned = predictions[predictions["model"] == "finetuned"].set_index("row_id")
    assert sorted(base.index) == sorted(tuned.index) == ["test0", "test1", "test2", "test3"]
    assert set(predictions["adapter"]) == {adapter_dir}
    assert set(predictions["split"]) == {"test"}
    # The base rows are the base model's own scores, and the adapter changes them.
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32").eval()
    questions = select_heldout_questions(prompts, EvaluateParams(split="test"))
    alone = score_heldout(model, tiny_tokenizer, questions, max_batch_tokens=10_000)
    alone = alone.set_index("row_id").loc[base.index]
    assert base["completion_nll"].tolist() == pytest.approx(alone["completion_nll"].tolist())
    assert base["letter_pred"].tolist() == alone["letter_pred"].tolist()
    assert not base["completion_nll"].equals(tuned["completion_nll"])
    assert base.loc["test2", "n_choices"] == 5 and base.loc["test0", "n_choices"] == 4


@pytest.fixture(scope="module")
def benchmark_questions():
    from gemma_pipeline.pipelines.ingest.nodes import ingest_benchmarks

    sample = {
        "mmlu": {"test": 6, "fewshot": 100},
        "mathqa": {"test": 3},
        "gsm8k": {"test": 2, "fewshot": 10},
    }
    sources = {t: {"task": t, "loader": "sample", "sample": s} for t, s in sample.items()}
    questions, rejected = ingest_benchmarks({"sources": {}, "benchmarks": sources})
    assert rejected.empty
    return questions


FORMAT = {
    "templates": {
        "mmlu": {"user": "{subject}: {question}\n{options}"},
        "mathqa": {"user": "{question}\n{options}"},
    }
}


def test_benchmarks_score_every_run_for_both_models(
    tiny_model_dir, adapter_dir, benchmark_questions
):
    params = {
        "benchmarks": {
            "mmlu": {"num_fewshot": [0, 5]},
            "mathqa": {"num_fewshot": [0]},
            "gsm8k": {"num_fewshot": [2]},
        },
        "prompt_styles": ["plain", "chat"],
        "max_benchmark_docs": 4,
        "generation_batch_size": 2,
    }
    predictions, lm_eval = score_benchmarks(
        benchmark_questions,
        adapter_dir,
        params,
        {"quantization": {"load_in_4bit": False}},
        {"name_or_path": str(tiny_model_dir), "dtype": "float32"},
        FORMAT,
    )
    assert lm_eval["models"] == {} and lm_eval["adapter"] == adapter_dir
    runs = predictions[["task", "shots", "style"]].drop_duplicates()
    assert len(runs) == 8
    # 4 mmlu x 2 shots + 3 mathqa + 2 gsm8k, per style and model
    assert len(predictions) == (4 * 2 + 3 + 2) * 2 * 2
    base = predictions[(predictions["model"] == "base") & (predictions["task"] == "mmlu")]
    tuned = predictions[(predictions["model"] == "finetuned") & (predictions["task"] == "mmlu")]
    assert base["loglikelihoods"].tolist() != tuned["loglikelihoods"].tolist()
    # The base rows are what scoring the base model alone gives.
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="x", dtype="float32").eval()
    capped = benchmark_questions[
        (benchmark_questions["split"] != "test")
        | benchmark_questions.groupby(["task", "split"]).cumcount().lt(4)
    ]
    alone = score_benchmark(model, tokenizer_of(tiny_model_dir), capped, "mathqa", 0, "plain")
    mine = predictions[
        (predictions["model"] == "base")
        & (predictions["task"] == "mathqa")
        & (predictions["style"] == "plain")
    ]
    assert mine["row_id"].tolist() == alone["row_id"].tolist()
    assert mine["acc"].tolist() == alone["acc"].tolist()
    for ours, theirs in zip(mine["loglikelihoods"], alone["loglikelihoods"], strict=True):
        assert list(ours) == pytest.approx(list(theirs), abs=1e-5)


def test_benchmarks_fail_before_loading_the_model_without_few_shot_rows(
    tiny_model_dir, adapter_dir, benchmark_questions
):
    no_pool = benchmark_questions[benchmark_questions["split"] == "test"]
    with pytest.raises(ValueError, match="5-shot needs 5 few-shot rows"):
        score_benchmarks(
            no_pool,
            adapter_dir,
            {"benchmarks": {"mmlu": {"num_fewshot": [5]}}},
            {"quantization": {"load_in_4bit": False}},
            {"name_or_path": "/nonexistent/model"},
            FORMAT,
        )


def test_lm_eval_tasks_run_through_lm_eval_and_agree_with_ours(
    tiny_model_dir, adapter_dir, benchmark_questions, tmp_path
):
    pytest.importorskip("lm_eval")
    from gemma_pipeline.sources import generate_mathqa_raw

    # The same three Math-QA rows the benchmark fixture generated, as a local lm-eval dataset.
    path = tmp_path / "mathqa_test.jsonl"
    generate_mathqa_raw("test", 3, 0).to_json(path, orient="records", lines=True)
    predictions, lm_eval = score_benchmarks(
        benchmark_questions,
        adapter_dir,
        {
            "benchmarks": {"mathqa": {"num_fewshot": [0]}},
            "prompt_styles": ["plain"],
            "lm_eval_tasks": [{"task": "mathqa", "data_files": {"test": str(path)}}],
            "lm_eval_batch_size": 2,
        },
        {"quantization": {"load_in_4bit": False}},
        {"name_or_path": str(tiny_model_dir), "dtype": "float32"},
        FORMAT,
    )
    for label in ("base", "finetuned"):
        theirs = lm_eval["models"][label]["mathqa"]
        ours = predictions[predictions["model"] == label]
        assert theirs["num_fewshot"] is None
        assert set(theirs["metrics"]) == {"acc,none", "acc_norm,none"}
        assert theirs["metrics"]["acc,none"]["value"] == pytest.approx(ours["acc"].mean())
        assert theirs["metrics"]["acc_norm,none"]["value"] == pytest.approx(ours["acc_norm"].mean())
