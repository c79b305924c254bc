import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model

from gemma_pipeline.config import EvaluateParams
from gemma_pipeline.modeling import load_causal_lm
from gemma_pipeline.pipelines.evaluate.nodes import (
    evaluate_adapter,
    evaluate_benchmarks,
    select_eval_questions,
)


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
    selected = select_eval_questions(_prompts(tiny_tokenizer), EvaluateParams(split="test"))
    assert sorted(selected["row_id"]) == ["test0", "test1", "test2", "test3"]
    capped = select_eval_questions(
        _prompts(tiny_tokenizer), EvaluateParams(max_questions_per_task=1)
    )
    assert capped.groupby("task").size().to_dict() == {"mathqa": 1, "mmlu": 1}


def test_evaluate_scores_base_and_adapter_on_the_same_questions(
    tiny_model_dir, tiny_tokenizer, adapter_dir
):
    predictions, metrics = evaluate_adapter(
        _prompts(tiny_tokenizer),
        adapter_dir,
        {"split": "test", "batch_size": 2},
        {"quantization": {"load_in_4bit": False}},
        {"name_or_path": str(tiny_model_dir), "dtype": "float32"},
    )
    assert set(metrics["tasks"]) == {"mmlu", "mathqa"}
    assert metrics["tasks"]["mmlu"]["n"] == 3 and metrics["tasks"]["mathqa"]["n"] == 1
    assert len(predictions) == 8
    base = predictions[predictions["model"] == "base"].set_index("row_id")
    tuned = predictions[predictions["model"] == "finetuned"].set_index("row_id")
    assert list(base.index) == list(tuned.index)
    # The adapter changes the model: completion log-likelihoods must differ.
    assert not base["completion_nll"].equals(tuned["completion_nll"])
    assert set(base["letter_pred"]) <= set("ABCDE")
    mass = metrics["tasks"]["mmlu"]["metrics"][3]
    assert mass["metric"] == "letter_prob_mass" and 0 < mass["base"] < 1


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
    predictions, metrics = evaluate_benchmarks(
        benchmark_questions,
        adapter_dir,
        params,
        {"quantization": {"load_in_4bit": False}},
        {"name_or_path": str(tiny_model_dir), "dtype": "float32"},
        FORMAT,
    )
    assert len(metrics["runs"]) == 8
    for label in ("base", "finetuned"):
        runs = metrics["models"][label]
        mmlu = runs["mmlu|5-shot|plain"]
        assert mmlu["acc"]["n"] == 4 and 0 <= mmlu["acc"]["value"] <= 1
        assert set(mmlu["categories"]) <= {"stem", "social_sciences", "humanities", "other"}
        assert set(mmlu) == {"acc", "acc_macro", "categories", "subjects", "seconds"}
        assert set(runs["mathqa|0-shot|plain"]) == {"acc", "acc_norm", "seconds"}
        gsm = runs["gsm8k|2-shot|chat"]
        assert set(gsm) == {"exact_match,strict-match", "exact_match,flexible-extract", "seconds"}
    # 4 mmlu x 2 shots + 3 mathqa + 2 gsm8k, per style and model
    assert len(predictions) == (4 * 2 + 3 + 2) * 2 * 2
    base = predictions[(predictions["model"] == "base") & (predictions["task"] == "mmlu")]
    tuned = predictions[(predictions["model"] == "finetuned") & (predictions["task"] == "mmlu")]
    assert base["loglikelihoods"].tolist() != tuned["loglikelihoods"].tolist()


def test_benchmarks_fail_before_loading_the_model_without_few_shot_rows(
    tiny_model_dir, adapter_dir, benchmark_questions
):
    no_pool = benchmark_questions[benchmark_questions["split"] == "test"]
    with pytest.raises(ValueError, match="5-shot needs 5 few-shot rows"):
        evaluate_benchmarks(
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
    _, metrics = evaluate_benchmarks(
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
        theirs = metrics["models"][label]["lm_eval"]["mathqa"]
        ours = metrics["models"][label]["mathqa|0-shot|plain"]
        assert set(theirs) == {"acc,none", "acc_norm,none"}
        assert theirs["acc,none"]["value"] == pytest.approx(ours["acc"]["value"])
        assert theirs["acc_norm,none"]["value"] == pytest.approx(ours["acc_norm"]["value"])
