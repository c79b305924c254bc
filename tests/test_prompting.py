"""The one prompt module: the same text and tokens for training and for evaluation."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_pipeline.config import FormatPromptsParams, IngestParams
from gemma_pipeline.evaluation.benchmarks import task_docs
from gemma_pipeline.evaluation.engine import encode_pairs
from gemma_pipeline.pipelines.format_prompts.nodes import format_prompts
from gemma_pipeline.pipelines.tokenize.nodes import tokenize_prompts
from gemma_pipeline.prompting import (
    IGNORE_INDEX,
    ChatFormat,
    encode_tails,
    encode_training_example,
    render_chat,
    render_user_message,
    rotate_options,
    splits_exactly,
)
from gemma_pipeline.sources.ingest import read_benchmarks

WORDS = st.lists(
    st.sampled_from(["the", "answer", "is", "a", "b", "1", "2", "cat", "x"]), max_size=60
)


def _prompt(tokenizer, text: str) -> str:
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_user_message_letters_options_and_falls_back_on_empty_subject(prompt_format, two_questions):
    params = FormatPromptsParams.model_validate(prompt_format)
    row = two_questions.set_index("row_id").loc["m1"]
    message = render_user_message(row, params)
    assert message == (
        "Question about general knowledge.\nWhat is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
    )


def test_prompt_and_completion_use_gemma_turns_and_end_the_model_turn(tiny_tokenizer):
    question = {"task": "mmlu", "subject": "", "question": "hi there", "choices": ["3", "4"]}
    chat = ChatFormat(
        tiny_tokenizer, FormatPromptsParams(templates={"mmlu": {"user": "{question}"}})
    )
    prompt, completion = chat.prompt_and_completion({**question, "answer": 1})
    assert prompt == "<bos><start_of_turn>user\nhi there<end_of_turn>\n<start_of_turn>model\n"
    assert completion == "B. 4<end_of_turn>\n"
    assert prompt == chat.prompt(question)


def test_a_template_alone_renders_as_the_tokenizer_does(tiny_tokenizer):
    """A GGUF's template, rendered without a transformers tokenizer, gives the same text."""
    chat = ChatFormat(
        tiny_tokenizer, FormatPromptsParams(templates={"mmlu": {"user": "{question}"}})
    )
    turns = [("What is 1 + 1?  ", "2"), ("And 2 + 2?", "4")]
    special = {"bos_token": tiny_tokenizer.bos_token, "eos_token": tiny_tokenizer.eos_token}
    for history in ([], turns):
        expected = chat.render(history, " Why? ")
        assert render_chat(tiny_tokenizer.chat_template, history, " Why? ", special) == expected
    assert render_chat(tiny_tokenizer.chat_template, [], "x", {"bos_token": "<s>"}).startswith(
        "<s>"
    )


def test_rotations_keep_the_answer_and_stay_adjacent(two_questions):
    questions = two_questions.assign(split="train")
    rotated = rotate_options(questions, 4)
    first = rotated[rotated["question_id"] == "m1"]
    assert first["row_id"].tolist() == ["m1", "m1/rot1", "m1/rot2", "m1/rot3"]
    assert rotated.index[rotated["question_id"] == "m1"].tolist() == [0, 1, 2, 3]
    for _, row in rotated.iterrows():
        assert row["choices"][row["answer"]] == ("4" if row["question_id"] == "m1" else "5")
    # Every letter is the right one exactly once across a question's four rotations.
    assert sorted(first["answer"]) == [0, 1, 2, 3]


def test_exactly_one_bos_and_completion_only_labels(tiny_tokenizer):
    prompt = _prompt(tiny_tokenizer, "what is the answer")
    assert prompt.startswith(tiny_tokenizer.bos_token)  # the template writes BOS as text
    row = encode_training_example(prompt, "B. 2<end_of_turn>\n", tiny_tokenizer, max_length=512)

    ids, labels = row["input_ids"], row["labels"]
    assert ids.count(tiny_tokenizer.bos_token_id) == 1 and ids[0] == tiny_tokenizer.bos_token_id
    n = row["prompt_length"]
    assert labels[:n] == [IGNORE_INDEX] * n
    assert ids[:n] == tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert labels[n:] == ids[n:]
    assert ids[n:] == tiny_tokenizer("B. 2<end_of_turn>\n", add_special_tokens=False)["input_ids"]
    assert not row["truncated"]


def test_bos_is_added_when_the_prompt_text_has_none(tiny_tokenizer):
    row = encode_training_example("the answer is", " a", tiny_tokenizer, max_length=64)
    assert row["input_ids"].count(tiny_tokenizer.bos_token_id) == 1
    assert row["input_ids"][0] == tiny_tokenizer.bos_token_id


def test_truncation_cuts_the_prompt_head_and_keeps_the_completion(tiny_tokenizer):
    prompt = _prompt(tiny_tokenizer, " ".join(["cat"] * 200) + " the answer is")
    completion = "A. 1<end_of_turn>\n"
    full = encode_training_example(prompt, completion, tiny_tokenizer, max_length=10_000)
    cut = encode_training_example(prompt, completion, tiny_tokenizer, max_length=32)

    assert cut["truncated"] and len(cut["input_ids"]) == 32
    assert cut["input_ids"][0] == tiny_tokenizer.bos_token_id
    n_completion = len(full["input_ids"]) - full["prompt_length"]
    assert cut["input_ids"][-n_completion:] == full["input_ids"][-n_completion:]
    # The end of the prompt (the model-turn header) survives, the start does not.
    tail = full["input_ids"][full["prompt_length"] - 5 : full["prompt_length"]]
    assert cut["input_ids"][cut["prompt_length"] - 5 : cut["prompt_length"]] == tail


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prompt_words=WORDS, completion_words=WORDS, max_length=st.integers(10, 80))
def test_invariants_hold_for_any_pair(tiny_tokenizer, prompt_words, completion_words, max_length):
    prompt = _prompt(tiny_tokenizer, " ".join(prompt_words))
    completion = " ".join(completion_words) + "<end_of_turn>\n"
    row = encode_training_example(prompt, completion, tiny_tokenizer, max_length=max_length)

    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels) == len(row["attention_mask"]) <= max_length
    assert ids.count(tiny_tokenizer.bos_token_id) == 1 and ids[0] == tiny_tokenizer.bos_token_id
    assert all(label == IGNORE_INDEX for label in labels[: row["prompt_length"]])
    assert labels[row["prompt_length"] :] == ids[row["prompt_length"] :]
    assert any(label != IGNORE_INDEX for label in labels)


def test_chat_benchmark_prompts_equal_the_training_prompts_token_for_token(
    tiny_tokenizer, tiny_tokenizer_dir, prompt_format
):
    """The chat style's whole claim: the fine-tune is asked exactly as it was trained."""
    sources = {
        "mmlu": {"task": "mmlu", "loader": "sample", "sample": {"test": 6}},
        "mathqa": {"task": "mathqa", "loader": "sample", "sample": {"test": 4}},
    }
    benchmark, _, _ = read_benchmarks(
        IngestParams.model_validate({"sources": {}, "benchmarks": sources})
    )
    model = {"name_or_path": str(tiny_tokenizer_dir)}
    # The training path: format_prompts, then tokenize, exactly as the pipeline runs them.
    prompts = format_prompts(benchmark.assign(split="test"), prompt_format, model)
    tokenized = tokenize_prompts(prompts, {"max_length": 512}, model)["test"]
    trained = {
        row_id: (ids[:n], ids[n])
        for row_id, ids, n in zip(
            tokenized["row_id"], tokenized["input_ids"], tokenized["prompt_length"], strict=True
        )
    }
    chat = ChatFormat(tiny_tokenizer, FormatPromptsParams.model_validate(prompt_format))
    compared = 0
    for task in ("mmlu", "mathqa"):
        for doc in task_docs(benchmark, task, 0, "chat", chat):
            prompt_ids, answer_token = trained[doc.row_id]
            pairs = [(request.context, request.continuation) for request in doc.requests]
            intact = [request.intact_context for request in doc.requests]
            encoded = encode_pairs(tiny_tokenizer, pairs, intact)
            for choice, (context_ids, continuation_ids) in enumerate(encoded):
                assert context_ids == prompt_ids
                assert len(continuation_ids) == 1
                if choice == doc.gold:  # the letter training put its label on
                    assert continuation_ids == [answer_token]
            compared += 1
    assert compared == 10


# --- encoding in pieces -------------------------------------------------------------------------


_SPLIT_WORDS = ["the", "cat", "Answer:", "A.", "B.", "\n", "\n\n", " ", "Which", "is", "1", "?"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(words=st.lists(st.sampled_from(_SPLIT_WORDS), min_size=2, max_size=30), data=st.data())
def test_a_split_it_calls_exact_encodes_as_the_whole_text(spm_tokenizer, words, data):
    text = "".join(words)
    at = data.draw(st.integers(0, len(text)))
    if splits_exactly(spm_tokenizer, text, at):
        left, right = encode_tails(spm_tokenizer, [text[:at], text[at:]])
        assert encode_tails(spm_tokenizer, [text])[0] == left + right


def test_splits_exactly_after_a_blank_line_but_not_inside_a_token(spm_tokenizer, tiny_tokenizer):
    text = "Answer: B\n\nWhich is the cat?"
    assert splits_exactly(spm_tokenizer, text, text.index("Which"))
    # "the" is one token of the SentencePiece vocabulary: a cut inside it is not exact.
    assert spm_tokenizer.tokenize(" the") == ["▁the"]
    assert not splits_exactly(spm_tokenizer, text, text.index("the") + 1)
    # Byte-level BPE (the tiny tokenizer) is not character-local: never split.
    assert not splits_exactly(tiny_tokenizer, text, text.index("Which"))
    assert not splits_exactly(spm_tokenizer, text, 0)
    assert not splits_exactly(spm_tokenizer, text, len(text))
