"""Checks of the GGUF files, each loaded by llama.cpp itself (llama-cpp-python).

Against the merged model in transformers (float32 compute on the merged weights):
- the tokenizer: llama.cpp's ids equal the HF tokenizer's on fixed strings, the rendered chat
  template among them;
- the greedy continuation of fixed chat prompts, token for token (``greedy_tokens`` of them,
  no stop token, on both sides);
- the metadata as llama.cpp read it: softcaps, sliding window, head sizes, special token ids,
  the chat template, and ``<end_of_turn>`` marked as end-of-generation.

Between the files: top-1 next-token agreement and perplexity on held-out completions (the
tokens training put its loss on), each quantized file relative to the full-precision one. And
generation stops: a chat completion that reaches ``<end_of_turn>`` ends there instead of
running to the token limit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gemma_pipeline.export.llama_cpp import require_runtime

logger = logging.getLogger(__name__)

END_OF_TURN = "<end_of_turn>"


def open_gguf(path: str | Path, *, n_ctx: int) -> Any:
    """The GGUF loaded by llama.cpp. Logits are computed for the last position only: the LM
    head over a 262k vocabulary is most of a forward's cost on the CPU."""
    llama_cpp = require_runtime()
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False, seed=0)


def last_logits(llm: Any) -> np.ndarray:
    """The logits after the last token llama.cpp evaluated (its C API: llama_get_logits_ith)."""
    pointer = require_runtime().llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).copy()


def token_ids(llm: Any, text: str) -> list[int]:
    """llama.cpp's tokenization of ``text``: special tokens parsed, no BOS added."""
    return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def check_tokenizer(llm: Any, tokenizer: Any, texts: Sequence[str]) -> dict[str, Any]:
    """llama.cpp's ids against the HF tokenizer's on each text; the differing texts listed."""
    mismatches = []
    for text in texts:
        theirs = tokenizer(text, add_special_tokens=False).input_ids
        ours = token_ids(llm, text)
        if ours != theirs:
            mismatches.append({"text": text[:80], "llama_cpp": ours[:16], "hf": theirs[:16]})
    return {"strings": len(texts), "mismatches": mismatches, "passed": not mismatches}


def llama_greedy(
    llm: Any, prompt_ids: Sequence[int], new_tokens: int
) -> tuple[list[int], np.ndarray]:
    """Greedy continuation by argmax of llama.cpp's logits (no sampler, no stop token), and
    the logits after the prompt."""
    llm.reset()
    llm.eval(list(prompt_ids))
    after_prompt = logits = last_logits(llm)
    out: list[int] = []
    for _ in range(new_tokens):
        out.append(int(np.argmax(logits)))
        llm.eval(out[-1:])
        logits = last_logits(llm)
    return out, after_prompt


def check_greedy(
    llm: Any,
    prompts_ids: Sequence[Sequence[int]],
    expected: Sequence[Sequence[int]],
    expected_first_logits: Sequence[np.ndarray],
) -> dict[str, Any]:
    """Each prompt's llama.cpp greedy continuation against transformers' (``expected``, from
    ``merged.greedy_continuation``); how many leading tokens agree, and the largest |logit
    difference| after the prompt."""
    agreeing, largest = [], 0.0
    for prompt, reference, reference_logits in zip(
        prompts_ids, expected, expected_first_logits, strict=True
    ):
        continuation, first_logits = llama_greedy(llm, prompt, len(reference))
        largest = max(largest, float(np.abs(first_logits - reference_logits).max()))
        same = 0
        for ours, theirs in zip(continuation, reference, strict=True):
            if ours != theirs:
                break
            same += 1
        agreeing.append(same)
    tokens = len(expected[0]) if expected else 0
    return {
        "prompts": len(agreeing),
        "tokens": tokens,
        "identical_prefix_tokens": agreeing,
        "max_abs_logit_diff_after_prompt": largest,
        "identical": all(same == tokens for same in agreeing),
    }


def completion_scores(
    llm: Any, texts: Sequence[tuple[Sequence[int], Sequence[int]]]
) -> tuple[np.ndarray, np.ndarray]:
    """For each (prompt ids, completion ids): every completion token's log-probability, and the
    argmax where it is predicted. One prompt forward, then one token at a time."""
    logprobs, top1 = [], []
    for prompt, completion in texts:
        llm.reset()
        llm.eval(list(prompt))
        rows = [last_logits(llm)]
        for token in completion[:-1]:
            llm.eval([token])
            rows.append(last_logits(llm))
        scores = torch.from_numpy(np.stack(rows)).double()
        targets = torch.tensor(list(completion))
        logprobs.append(
            torch.log_softmax(scores, dim=-1)[torch.arange(len(targets)), targets].numpy()
        )
        top1.append(scores.argmax(dim=-1).numpy())
    return np.concatenate(logprobs), np.concatenate(top1)


def perplexity(logprobs: np.ndarray) -> float:
    return math.exp(-float(np.mean(logprobs)))


def compare_with_reference(
    scores: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """Top-1 agreement and perplexity of one file against the full-precision file."""
    (logprobs, top1), (ref_logprobs, ref_top1) = scores, reference
    ppl, ref_ppl = perplexity(logprobs), perplexity(ref_logprobs)
    return {
        "tokens": len(top1),
        "top1_agreement": float(np.mean(top1 == ref_top1)),
        "perplexity": ppl,
        "reference_perplexity": ref_ppl,
        "perplexity_change": ppl / ref_ppl - 1.0,
    }


def check_stop(llm: Any, end_of_turn_id: int, prompt: str, max_tokens: int) -> dict[str, Any]:
    """Does a chat completion end at ``<end_of_turn>``?

    The forced case biases ``<end_of_turn>`` to be the first token: a GGUF whose vocabulary
    does not mark it as end-of-generation then emits it again and again up to ``max_tokens``.
    The natural case reports where plain greedy decoding ended, which depends on the model.
    """
    messages = [{"role": "user", "content": prompt}]
    settings: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.0, "seed": 0}
    llm.reset()
    forced = llm.create_chat_completion(
        messages=messages, logit_bias={end_of_turn_id: 100.0}, **settings
    )
    llm.reset()
    natural = llm.create_chat_completion(messages=messages, **settings)
    forced_choice, natural_choice = forced["choices"][0], natural["choices"][0]
    return {
        "forced_finish_reason": forced_choice["finish_reason"],
        "forced_completion_tokens": forced["usage"]["completion_tokens"],
        "natural_finish_reason": natural_choice["finish_reason"],
        "natural_completion_tokens": natural["usage"]["completion_tokens"],
        "max_tokens": max_tokens,
        "passed": forced_choice["finish_reason"] == "stop"
        and END_OF_TURN not in (forced_choice["message"]["content"] or ""),
    }


def check_metadata(llm: Any, config: Any, tokenizer: Any) -> dict[str, Any]:
    """The metadata llama.cpp read from the GGUF, against the merged model's config and
    tokenizer. (Norm weights stored as 1 + w, RoPE and the rest of the arithmetic are checked
    by the logits and greedy comparisons.)"""
    metadata = llm.metadata
    arch = metadata.get("general.architecture")
    expected: dict[str, Any] = {
        f"{arch}.attention.key_length": config.head_dim,
        f"{arch}.attention.value_length": config.head_dim,
        f"{arch}.attention.head_count": config.num_attention_heads,
        f"{arch}.attention.head_count_kv": config.num_key_value_heads,
        f"{arch}.block_count": config.num_hidden_layers,
        f"{arch}.embedding_length": config.hidden_size,
        f"{arch}.attention.sliding_window": config.sliding_window,
        "tokenizer.ggml.bos_token_id": tokenizer.bos_token_id,
        "tokenizer.ggml.eos_token_id": tokenizer.eos_token_id,
        "tokenizer.ggml.padding_token_id": tokenizer.pad_token_id,
        "tokenizer.chat_template": tokenizer.chat_template,
    }
    if getattr(config, "attn_logit_softcapping", None) is not None:
        expected[f"{arch}.attn_logit_softcapping"] = config.attn_logit_softcapping
    if getattr(config, "final_logit_softcapping", None) is not None:
        expected[f"{arch}.final_logit_softcapping"] = config.final_logit_softcapping
    wrong = {
        key: {"gguf": metadata.get(key), "expected": value}
        for key, value in expected.items()
        if not _same(metadata.get(key), value)
    }
    # llama.cpp loaded the vocabulary; it must also say that <end_of_turn> ends a turn.
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    vocab = require_runtime().llama_model_get_vocab(llm.model)
    if not require_runtime().llama_vocab_is_eog(vocab, end_of_turn):
        wrong[END_OF_TURN] = {"gguf": "not end-of-generation", "expected": "end-of-generation"}
    return {
        "architecture": arch,
        "checked_keys": sorted(expected),
        "wrong": wrong,
        "tokenizer_model": metadata.get("tokenizer.ggml.model"),
        "passed": not wrong,
    }


def _same(actual: str | None, expected: Any) -> bool:
    """llama.cpp hands metadata over as text: "50.000000", "32", the template itself."""
    if actual is None or expected is None:
        return actual == expected
    if isinstance(expected, float):
        return math.isclose(float(actual), expected, rel_tol=1e-6)
    return actual == str(expected)
