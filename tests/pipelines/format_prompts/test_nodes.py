import pandas as pd
import pytest

from gemma_pipeline.pipelines.format_prompts.nodes import PROMPT_COLUMNS, format_prompts

FORMAT = {
    "templates": {
        "mmlu": {"user": "Question about {subject}.\n{question}\n{options}\nAnswer:"},
        "mathqa": {"user": "Solve.\n{question}\n{options}"},
    },
}


def _questions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_id": ["m1", "q1"],
            "source": ["mmlu", "mathqa"],
            "task": ["mmlu", "mathqa"],
            "split": ["train", "test"],
            "subject": ["", "gain"],
            "question": ["What is 2 + 2?", "A train goes 10 km in 2 h. Speed?"],
            "choices": [["3", "4", "5", "6"], ["2", "5", "10", "20", "none"]],
            "answer": [1, 1],
            "rationale": [None, "10 / 2 = 5"],
        }
    )


def test_format_prompts_builds_every_pair(tiny_tokenizer_dir):
    prompts = format_prompts(_questions(), FORMAT, {"name_or_path": str(tiny_tokenizer_dir)})
    assert list(prompts.columns) == PROMPT_COLUMNS
    assert prompts["answer_letter"].tolist() == ["B", "B"]
    assert prompts["completion"].tolist() == ["B. 4<end_of_turn>\n", "B. 5<end_of_turn>\n"]
    mathqa = prompts.set_index("row_id").loc["q1", "prompt"]
    assert "E. none" in mathqa
    assert mathqa.count("<start_of_turn>user") == 1


def test_missing_template_for_a_task_is_an_error(tiny_tokenizer_dir):
    only_mmlu = {"templates": {"mmlu": FORMAT["templates"]["mmlu"]}}
    with pytest.raises(ValueError, match="no template for task"):
        format_prompts(_questions(), only_mmlu, {"name_or_path": str(tiny_tokenizer_dir)})


def test_only_training_questions_are_rotated(tiny_tokenizer_dir):
    params = {**FORMAT, "train_option_rotations": 3}
    prompts = format_prompts(_questions(), params, {"name_or_path": str(tiny_tokenizer_dir)})
    assert (prompts["split"] == "train").sum() == 3
    assert (prompts["split"] == "test").sum() == 1
    assert prompts.loc[prompts["split"] == "test", "row_id"].tolist() == ["q1"]
