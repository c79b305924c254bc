"""`gemma-pipeline ask` on a tiny project's runs: which model, what it answers, what it refuses."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch

from gemma_pipeline.config import FormatPromptsParams
from gemma_pipeline.console import EXIT_USER_ERROR, main
from gemma_pipeline.evaluation.heldout import score_heldout
from gemma_pipeline.modeling.loading import load_causal_lm, load_tokenizer
from gemma_pipeline.prompting import ChatFormat, answer_text, encode_prompt

QUESTION = "Which planet is known as the red planet?"
OLD_RUN, NEW_RUN = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"


@pytest.fixture(scope="module", autouse=True)
def _runs_are_the_projects(project_runs):
    assert project_runs == (OLD_RUN, NEW_RUN)


def run(project, *args, capsys) -> tuple[int, str, str]:
    code = main(["ask", "--project", str(project), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _format_params(project) -> FormatPromptsParams:
    import yaml

    raw = yaml.safe_load((project / "conf/base/parameters_format_prompts.yml").read_text())
    return FormatPromptsParams.model_validate(raw["format_prompts"])


@pytest.fixture(scope="module")
def merged(tiny_project):
    folder = tiny_project / "data/06_models/merged_model" / NEW_RUN / "merged_model"
    model = load_causal_lm(str(folder), embedded_cache_dir="x", dtype="float32").eval()
    tokenizer = load_tokenizer(str(folder), embedded_cache_dir="x")
    return model, ChatFormat(tokenizer, _format_params(tiny_project))


def greedy_reference(model, chat: ChatFormat, question: str, max_new_tokens: int) -> str:
    """model.generate's greedy answer to the chat prompt, stopping where Gemma's turn ends."""
    tokenizer = chat.tokenizer
    ids = encode_prompt(tokenizer, chat.render([], question))
    stops = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_ask_streams_the_latest_merged_models_greedy_answer(tiny_project, merged, capsys):
    code, out, err = run(tiny_project, QUESTION, "--max-new-tokens", "12", capsys=capsys)
    assert code == 0
    assert out == greedy_reference(*merged, QUESTION, 12) + "\n"
    assert f"merged {tiny_project}/data/06_models/merged_model/{NEW_RUN}" in err
    assert "12 new" in err or "prompt tokens" in err


def test_sampling_repeats_with_a_seed_and_differs_from_greedy(tiny_project, capsys):
    sample = ["--temperature", "1.5", "--top-p", "0.95", "--max-new-tokens", "16"]
    answers = [
        run(tiny_project, QUESTION, *sample, "--seed", str(seed), capsys=capsys)[1]
        for seed in (1, 1, 2)
    ]
    greedy = run(tiny_project, QUESTION, "--max-new-tokens", "16", capsys=capsys)[1]
    assert answers[0] == answers[1]
    assert len({answers[0], answers[2], greedy}) == 3


@pytest.mark.parametrize(
    ("args", "loaded"),
    [
        (["--model", "base"], "base "),
        (["--model", "adapter"], f"adapter/{NEW_RUN}/adapter"),
        (["--model", "adapter", "--version", OLD_RUN], f"adapter/{OLD_RUN}/adapter"),
        (["--model", "gguf"], f"gguf/{NEW_RUN}/gguf/gemma-2-2b-it-mmlu-qlora-q8_0.gguf"),
        (["--model", "gguf", "--gguf-type", "f16"], "qlora-f16.gguf"),
    ],
)
def test_model_and_version_pick_what_is_loaded(tiny_project, args, loaded, capsys):
    code, out, err = run(tiny_project, QUESTION, *args, "--max-new-tokens", "4", capsys=capsys)
    assert code == 0, err
    assert out.strip()
    assert loaded in err


def test_the_adapter_unmerged_answers_as_the_merged_folder(tiny_project, capsys):
    merged = run(tiny_project, QUESTION, "--max-new-tokens", "12", capsys=capsys)[1]
    adapter = run(
        tiny_project, QUESTION, "--model", "adapter", "--max-new-tokens", "12", capsys=capsys
    )
    assert adapter[1] == merged


def test_a_file_of_questions_is_answered_in_batches_as_one_by_one(tiny_project, tmp_path, capsys):
    questions = [QUESTION, "Name a prime number.", "Why is the sky blue? Answer briefly, please."]
    source = tmp_path / "questions.jsonl"
    source.write_text(
        "\n".join(json.dumps({"question": q, "id": i}) for i, q in enumerate(questions)) + "\n\n"
    )
    out_file = tmp_path / "answers.jsonl"
    code, _, err = run(
        tiny_project,
        "--file",
        str(source),
        "--out",
        str(out_file),
        "--max-new-tokens",
        "8",
        capsys=capsys,
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [row["id"] for row in rows] == [0, 1, 2]
    singles = [run(tiny_project, q, "--max-new-tokens", "8", capsys=capsys)[1] for q in questions]
    assert [row["response"] + "\n" for row in rows] == singles
    assert all(NEW_RUN in row["model"] for row in rows)
    assert "ask: 100%" in err  # the progress bar


def test_option_probabilities_are_evaluates_held_out_scores(tiny_project, merged, capsys):
    question = {
        "task": "mmlu",
        "subject": "astronomy",
        "question": QUESTION,
        "choices": ["Venus", "Mars", "Jupiter"],
        "answer": 1,
    }
    code, out, _ = run(
        tiny_project,
        QUESTION,
        "--choices",
        "Venus",
        "Mars",
        "Jupiter",
        "--subject",
        "astronomy",
        capsys=capsys,
    )
    assert code == 0
    model, chat = merged
    row = {**question, "row_id": "q", "prompt": chat.prompt(question)}
    row["completion"] = answer_text(question, chat.params)
    expected = score_heldout(model, chat.tokenizer, pd.DataFrame([row]), max_batch_tokens=4096)
    logprobs = expected.iloc[0]["letter_logprobs"]
    total = sum(math.exp(lp) for lp in logprobs)
    lines = [line for line in out.splitlines() if line.strip()[:2] in ("A.", "B.", "C.")]
    printed = [float(line.split()[2]) for line in lines]
    assert printed == pytest.approx([math.exp(lp) / total for lp in logprobs], abs=6e-4)
    best = "ABC"[max(range(3), key=lambda i: logprobs[i])]
    assert "◀ letter" in next(line for line in lines if line.strip().startswith(best))


def test_an_mmlu_row_marks_its_answer(tiny_project, tmp_path, capsys):
    row = tmp_path / "row.json"
    row.write_text(json.dumps({"question": "2 + 2 =", "choices": ["3", "4"], "answer": 1}))
    code, out, _ = run(tiny_project, "--row", str(row), capsys=capsys)
    assert code == 0
    assert "(answer)" in next(line for line in out.splitlines() if "B. 4" in line)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "2020-01-01T00.00.00.000Z", QUESTION], "No merged_model version 2020"),
        (["--model", "adapter", "--version", "nope", QUESTION], f"latest versions: {OLD_RUN}"),
        (["   "], "The prompt is empty"),
        (["word " * 600], "more than the model's context of 512"),
        ([QUESTION, "--max-new-tokens", "600"], "more than the model's context of 512"),
        (["--file", "missing.jsonl", "--out", "a.jsonl"], "missing.jsonl: cannot read it"),
        (["--row", '{"question": "q", "choices": ["a"]}'], "field 'choices' must be"),
        (["--row", '{"question": "q", "choices": ["a", "b"], "answer": 2}'], "field 'answer'"),
        (["--model", "gguf", QUESTION, "--choices", "a", "b"], "scored by the evaluation engine"),
        ([QUESTION, "--temperature", "-1"], "temperature must be"),
    ],
)
def test_user_errors_are_one_line_and_exit_non_zero(tiny_project, args, message, capsys):
    code, out, err = run(tiny_project, *args, capsys=capsys)
    assert code == EXIT_USER_ERROR
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""


def test_a_bad_line_is_named_before_any_model_loads(tiny_project, tmp_path, capsys):
    source = tmp_path / "q.jsonl"
    source.write_text('{"question": "fine"}\n{"question": ""}\n')
    code, _, err = run(
        tiny_project, "--file", str(source), "--out", str(tmp_path / "a.jsonl"), capsys=capsys
    )
    assert code == EXIT_USER_ERROR
    assert (
        err.strip() == f"gemma-pipeline ask: {source}, line 2: field 'question' is missing or empty"
    )
    source.write_text('{"question": "fine"}\nnot json\n')
    assert (
        "line 2: not valid JSON"
        in run(
            tiny_project, "--file", str(source), "--out", str(tmp_path / "a.jsonl"), capsys=capsys
        )[2]
    )


def test_answers_never_overwrite_a_file(tiny_project, tmp_path, capsys):
    source, target = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    source.write_text('{"question": "hi"}\n')
    target.write_text("precious\n")
    code, _, err = run(tiny_project, "--file", str(source), "--out", str(target), capsys=capsys)
    assert code == EXIT_USER_ERROR
    assert "exists" in err
    assert target.read_text() == "precious\n"


def test_a_project_without_the_artifact_says_how_to_make_it(
    tmp_path, gemma3_dir, make_project, capsys
):
    project = make_project(tmp_path / "empty", gemma3_dir)
    code, _, err = run(project, "--model", "gguf", QUESTION, capsys=capsys)
    assert code == EXIT_USER_ERROR
    assert "No gguf_files in" in err
    assert "kedro run --pipeline export" in err


def test_the_installed_script_has_help_and_no_traceback_for_user_errors(tiny_project):
    script = [
        sys.executable,
        "-c",
        "import sys; from gemma_pipeline.console import main; sys.exit(main())",
    ]
    for command in ([], ["ask"], ["serve"], ["rag"]):
        helped = subprocess.run([*script, *command, "--help"], capture_output=True, text=True)
        assert helped.returncode == 0
        assert helped.stdout.startswith("usage: gemma-pipeline")
    failed = subprocess.run(
        ["gemma-pipeline", "ask", "--version", "nope", "hello"],
        capture_output=True,
        text=True,
        cwd=tiny_project,
    )
    assert failed.returncode == EXIT_USER_ERROR
    assert "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("gemma-pipeline ask: No merged_model")
