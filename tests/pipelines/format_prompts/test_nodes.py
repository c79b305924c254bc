import pytest

from gemma_pipeline.pipelines.format_prompts.nodes import PROMPT_COLUMNS, format_prompts


def test_format_prompts_builds_every_pair(tiny_tokenizer_dir, prompt_format, two_questions):
    prompts = format_prompts(
        two_questions, prompt_format, {"name_or_path": str(tiny_tokenizer_dir)}
    )
    assert list(prompts.columns) == PROMPT_COLUMNS
    assert prompts["answer_letter"].tolist() == ["B", "B"]
    assert prompts["completion"].tolist() == ["B. 4<end_of_turn>\n", "B. 5<end_of_turn>\n"]
    mathqa = prompts.set_index("row_id").loc["q1", "prompt"]
    assert "E. none" in mathqa
    assert mathqa.count("<start_of_turn>user") == 1


def test_missing_template_for_a_task_is_an_error(tiny_tokenizer_dir, prompt_format, two_questions):
    only_mmlu = {"templates": {"mmlu": prompt_format["templates"]["mmlu"]}}
    with pytest.raises(ValueError, match="no template for task"):
        format_prompts(two_questions, only_mmlu, {"name_or_path": str(tiny_tokenizer_dir)})


def test_only_training_questions_are_rotated(tiny_tokenizer_dir, prompt_format, two_questions):
    params = {**prompt_format, "train_option_rotations": 3}
    prompts = format_prompts(two_questions, params, {"name_or_path": str(tiny_tokenizer_dir)})
    assert (prompts["split"] == "train").sum() == 3
    assert (prompts["split"] == "test").sum() == 1
    assert prompts.loc[prompts["split"] == "test", "row_id"].tolist() == ["q1"]
