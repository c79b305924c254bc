import itertools

import pytest
import torch

from gemma_pipeline.evaluation.engine import (
    MIN_FILL,
    GenerationRequest,
    LoglikelihoodRequest,
    _batches,
    _Row,
    cut_at_stop_sequences,
    encode_pairs,
    generate_until,
    loglikelihood,
)
from gemma_pipeline.modeling import load_causal_lm
from gemma_pipeline.modeling.compiled import compiled_layers
from gemma_pipeline.prompting import splits_exactly


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir), embedded_cache_dir="unused", dtype="float32")
    return model.eval()


def _reference(model, tokenizer, context, continuation):
    """lm-eval's HF computation: one full forward of context + continuation, full logits.

    Tokens as ``HFLM._encode_pair`` makes them: the context's trailing spaces move to the
    continuation, the tokenizer adds its BOS, the whole text is split after the context.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    context_ids = tokenizer(context)["input_ids"]
    continuation_ids = tokenizer(context + continuation)["input_ids"][len(context_ids) :]
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    picked = [logprobs[len(context_ids) - 1 + k] for k in range(len(continuation_ids))]
    total = sum(row[token].item() for row, token in zip(picked, continuation_ids, strict=True))
    greedy = all(row.argmax().item() == t for row, t in zip(picked, continuation_ids, strict=True))
    return total, greedy


def _requests():
    # The shared block (about 60 tokens) is longer than the tiny model's sliding window (32),
    # so the cached prefix must also be right for the sliding-window layers.
    shared = "The following are questions about cats.\n\n" + "the cat is a cat. " * 8 + "\n\n"
    questions = ["What is the cat?\nAnswer:", "Which of the following is true?\nAnswer:"]
    requests = [
        LoglikelihoodRequest(shared + q, f" {letter}", shared)
        for q in questions
        for letter in "ABCD"
    ]
    requests += [
        LoglikelihoodRequest("Question: what is 1 + 1?\nAnswer:", " 2 is the answer"),
        LoglikelihoodRequest("Question: what is 1 + 1?\nAnswer:", " 12"),
        LoglikelihoodRequest("Question: what is 1 + 1?\nAnswer: ", "3"),  # trailing space moves
        LoglikelihoodRequest(shared + "Short\nAnswer:", " the cat is a cat", shared),
    ]
    return requests


def test_loglikelihood_matches_full_forward_per_request(tiny_model, tiny_tokenizer):
    requests = _requests()
    results = loglikelihood(tiny_model, tiny_tokenizer, requests, max_batch_tokens=64)
    for request, result in zip(requests, results, strict=True):
        expected, greedy = _reference(
            tiny_model, tiny_tokenizer, request.context, request.continuation
        )
        assert result.logprob == pytest.approx(expected, abs=1e-4), request
        assert result.is_greedy == greedy


def test_shared_prefix_changes_nothing_but_speed(tiny_model, tiny_tokenizer):
    requests = _requests()
    unshared = [LoglikelihoodRequest(r.context, r.continuation) for r in requests]
    with_prefix = loglikelihood(tiny_model, tiny_tokenizer, requests)
    without = loglikelihood(tiny_model, tiny_tokenizer, unshared, max_batch_size=1)
    for a, b in zip(with_prefix, without, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_prefix_that_does_not_tokenize_on_its_own_still_scores_exactly(tiny_model, tiny_tokenizer):
    # "cat" + "s" may merge across the prefix boundary: only the common tokens are reused.
    request = LoglikelihoodRequest(
        "the cat is a cats\nAnswer:", " A", shared_prefix="the cat is a cat"
    )
    [result] = loglikelihood(tiny_model, tiny_tokenizer, [request])
    expected, _ = _reference(tiny_model, tiny_tokenizer, request.context, request.continuation)
    assert result.logprob == pytest.approx(expected, abs=1e-4)


def test_encode_pairs_moves_trailing_spaces_to_the_continuation(tiny_tokenizer):
    [(context, continuation)] = encode_pairs(tiny_tokenizer, [("Answer: ", "3")])
    assert context == tiny_tokenizer("Answer:")["input_ids"]
    assert context + continuation == tiny_tokenizer("Answer: 3")["input_ids"]


def test_an_intact_context_keeps_its_newline_and_its_single_bos(tiny_tokenizer):
    prompt = "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    [(context, continuation)] = encode_pairs(tiny_tokenizer, [(prompt, "B")], [True])
    assert context == tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert context.count(tiny_tokenizer.bos_token_id) == 1
    assert continuation == tiny_tokenizer("B", add_special_tokens=False)["input_ids"]
    # lm-eval's rule on the same pair moves the newline into the continuation instead.
    [(split_context, split_continuation)] = encode_pairs(tiny_tokenizer, [(prompt, "B")])
    assert split_context == context[:-1] and split_continuation == [context[-1], *continuation]


def test_cut_at_stop_sequences_applies_every_stop_in_turn():
    assert cut_at_stop_sequences("12\n\nQuestion: next", ["Question:", "</s>"]) == "12\n\n"
    assert cut_at_stop_sequences("a</s>b<|im_end|>c", ["Question:", "</s>", "<|im_end|>"]) == "a"


def _greedy_one(model, tokenizer, context, max_new, stops):
    ids = tokenizer(context)["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            token = int(logits.argmax())
            out.append(token)
            text = tokenizer.decode(out, skip_special_tokens=True)
            if token == tokenizer.eos_token_id or any(s in text for s in stops):
                break
    return cut_at_stop_sequences(tokenizer.decode(out, skip_special_tokens=True), [*stops, "<eos>"])


def test_batched_generation_equals_one_at_a_time_greedy(tiny_model, tiny_tokenizer):
    contexts = [
        "Question: what is 1 + 1?\nAnswer:",
        "the cat",
        "Question: the answer is\nAnswer: x",
    ]
    stops = ("Question:", "is")
    requests = [GenerationRequest(c, stops, max_gen_toks=12) for c in contexts]
    outputs = generate_until(tiny_model, tiny_tokenizer, requests, batch_size=3)
    for context, output in zip(contexts, outputs, strict=True):
        assert output == _greedy_one(tiny_model, tiny_tokenizer, context, 12, stops)


def test_head_projection_in_chunks_gives_the_same_scores(tiny_model, tiny_tokenizer, monkeypatch):
    from gemma_pipeline.evaluation import engine

    requests = _requests()
    whole = loglikelihood(tiny_model, tiny_tokenizer, requests)
    monkeypatch.setattr(engine, "HEAD_CHUNK", 3)  # chunks end inside continuations
    chunked = loglikelihood(tiny_model, tiny_tokenizer, requests)
    assert [r.logprob for r in chunked] == pytest.approx([r.logprob for r in whole], abs=1e-5)
    assert [r.is_greedy for r in chunked] == [r.is_greedy for r in whole]


def test_generation_after_a_shared_block_equals_one_at_a_time_greedy(
    tiny_model, tiny_tokenizer, monkeypatch
):
    from gemma_pipeline.evaluation import engine

    # The block (about 60 tokens) is longer than the tiny model's sliding window (32), and
    # stop checks every 2 steps drop rows from the batch while others go on.
    monkeypatch.setattr(engine, "STOP_CHECK_EVERY", 2)
    shared = "Question: the cat is a cat.\nAnswer: the cat\n\n" * 5
    contexts = [shared + q for q in ("Question: what is it?\nAnswer:", "Question: x\nAnswer:", "y")]
    for stops in (("Question:", "is"), ("never produced",)):
        requests = [GenerationRequest(c, stops, max_gen_toks=9) for c in contexts]
        outputs = generate_until(tiny_model, tiny_tokenizer, requests, batch_size=2)
        expected = [_greedy_one(tiny_model, tiny_tokenizer, c, 9, stops) for c in contexts]
        assert outputs == expected
    assert engine._shared_length([tiny_tokenizer(c)["input_ids"] for c in contexts]) > 32


def test_greedy_decode_drops_stopped_rows_and_keeps_the_others_exact(tiny_model, tiny_tokenizer):
    from gemma_pipeline.evaluation.engine import greedy_decode

    rows = [tiny_tokenizer(t)["input_ids"] for t in ("the cat is", "Question: a b c d e\nAnswer:")]
    alone = [greedy_decode(tiny_model, [row], None, 8, lambda _: False) for row in rows]

    # The first row stops at the first check (after 2 steps); the second runs all 8 steps.
    def stopped(tokens):
        return tokens == alone[0][0][:2]

    together = greedy_decode(tiny_model, rows, None, 8, stopped, check_every=2)
    assert together == [alone[0][0][:2], alone[1][0]]
    assert len(together[1]) == 8


def test_fixed_shape_decoding_equals_a_growing_cache(tiny_model, tiny_tokenizer):
    """The CUDA-graph path's cache (fixed buffers written in place), run eagerly on the CPU."""
    from gemma_pipeline.evaluation.engine import _shared_length, greedy_decode, run_prefix

    shared = "Question: the cat is a cat.\nAnswer: the cat\n\n" * 5
    contexts = [tiny_tokenizer(shared + q)["input_ids"] for q in ("what is it?", "x", "a b c d")]
    length = _shared_length(contexts)
    prefix = run_prefix(tiny_model, contexts[0][:length], torch.device("cpu"))
    rows = [c[length:] for c in contexts]
    for check_every in (3, 100):
        growing = greedy_decode(tiny_model, rows, prefix, 10, lambda _: False, fixed_shapes=False)
        fixed = greedy_decode(
            tiny_model,
            rows,
            prefix,
            10,
            lambda _: False,
            check_every=check_every,
            fixed_shapes=True,
        )
        assert fixed == growing and all(len(tokens) == 10 for tokens in fixed)
    # Every row done at the first check: the fixed path stops there too.
    early = greedy_decode(
        tiny_model, rows, prefix, 10, lambda _: True, check_every=3, fixed_shapes=True
    )
    assert early == [tokens[:3] for tokens in growing]


def test_a_model_with_fused_attention_generates_whole_contexts(gemma3_dir, spm_tokenizer):
    # Gemma 3 (the demo) attends with SDPA; generation then keeps it (model.generate).
    model = load_causal_lm(
        str(gemma3_dir), embedded_cache_dir="unused", dtype="float32", attn_implementation="sdpa"
    ).eval()
    shared = "Question: the cat is a cat.\nAnswer: the cat\n\n" * 3
    contexts = [shared + q for q in ("Question: what is it?\nAnswer:", "y")]
    requests = [GenerationRequest(c, ("Question:",), max_gen_toks=6) for c in contexts]
    outputs = generate_until(model, spm_tokenizer, requests, batch_size=2)
    expected = [_greedy_one(model, spm_tokenizer, c, 6, ("Question:",)) for c in contexts]
    assert outputs == expected


def test_encoding_the_shared_block_once_gives_lm_evals_tokens(spm_tokenizer):
    shared = "The following are questions about cats.\n\n" + "the cat is a cat.\nAnswer: B\n\n" * 3
    questions = ["Which cat is the cat?\nAnswer:", "What is 1 + 1?\nAnswer: ", "\nthe\nAnswer:"]
    requests = [(shared + q, f" {letter}") for q in questions for letter in "ABCD"]
    prefixes = [shared] * len(requests)
    # The split is really taken here: the block ends where no token spans.
    assert all(splits_exactly(spm_tokenizer, context, len(shared)) for context, _ in requests)
    assert encode_pairs(spm_tokenizer, requests, None, prefixes) == encode_pairs(
        spm_tokenizer, requests
    )
    # Against lm-eval's rule, written out: encode the whole, split after the context.
    for (context, continuation), (got_context, got_continuation) in zip(
        requests, encode_pairs(spm_tokenizer, requests, None, prefixes), strict=True
    ):
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = spm_tokenizer(context + continuation)["input_ids"]
        assert got_context == spm_tokenizer(context)["input_ids"]
        assert got_continuation == whole[len(got_context) :]


def test_compiled_layers_score_as_the_eager_ones_and_are_restored(tiny_model, tiny_tokenizer):
    requests = _requests()
    eager = loglikelihood(tiny_model, tiny_tokenizer, requests)
    layers = tiny_model.model.layers
    # The eager backend runs dynamo's tracing of the layers (shared-prefix attention included)
    # without inductor's code generation, which the engine uses on CUDA.
    with compiled_layers(tiny_model, backend="eager"):
        assert all("forward" in layer.__dict__ for layer in layers)
        traced = [
            loglikelihood(tiny_model, tiny_tokenizer, requests, max_batch_tokens=budget)
            for budget in (256, 16384)
        ]
    assert all("forward" not in layer.__dict__ for layer in layers)
    for results in traced:
        for got, want in zip(results, eager, strict=True):
            assert got.logprob == pytest.approx(want.logprob, abs=1e-4)
            assert got.is_greedy == want.is_greedy


def test_batches_are_longest_first_within_budget_and_fill():
    rows = [_Row(tuple(range(n)), []) for n in (100, 95, 90, 81, 79, 60, 10, 9, 8, 2)]
    batches = _batches(rows, max_batch_tokens=10_000, max_batch_size=512, prefix_length=20)
    lengths = [[len(row.tokens) for row in batch] for batch in batches]
    flat = list(itertools.chain.from_iterable(lengths))
    assert flat == sorted(flat, reverse=True)
    assert sorted(flat) == sorted(len(row.tokens) for row in rows)  # each row once
    for batch in lengths:
        assert min(batch) >= MIN_FILL * batch[0]
        assert len(batch) * (20 + batch[0]) <= 10_000
    assert lengths[0] == [100, 95, 90, 81]  # 79 < 0.8 x 100 starts the next batch
