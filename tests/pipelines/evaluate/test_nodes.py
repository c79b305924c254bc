import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model

from gemma_pipeline.config import EvaluateParams
from gemma_pipeline.modeling import load_causal_lm
from gemma_pipeline.pipelines.evaluate.nodes import evaluate_adapter, select_eval_questions


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
