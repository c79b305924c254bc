"""Every export checked against the model it came from: the record ``export_checks.json`` holds.

- The merged folder, reloaded as a user would, against base + adapter (unmerged).
- Each GGUF, loaded by llama.cpp, against the merged model in transformers and against the
  full-precision GGUF (see ``gguf_checks``).

Transformers computes in float32 on both sides of every comparison: the merged weights are
bf16 (what ships), but float32 arithmetic keeps the comparison about the weights and the
export, not about bf16 activations rounding differently in two implementations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from gemma_pipeline.config import ExportChecksParams
from gemma_pipeline.export import gguf_checks
from gemma_pipeline.export.gguf import FULL_PRECISION, files_in
from gemma_pipeline.export.llama_cpp import runtime_available
from gemma_pipeline.export.merged import GreedyReference, check_merged
from gemma_pipeline.modeling.loading import load_tokenizer
from gemma_pipeline.prompting import encode_continuation, encode_prompt

logger = logging.getLogger(__name__)

#: Fixed strings whose token ids llama.cpp and the HF tokenizer must agree on (the rendered
#: chat template is added per run); spaces, digits, accents, emoji and markup on purpose.
TOKENIZER_STRINGS = (
    "The capital of France is Paris.",
    "  two leading spaces, a\ttab and a trailing space ",
    "Question: 12 + 7 = ?\nA. 18\nB. 19\nC. 20\nD. 21\nAnswer:",
    "naïve café, Straße, 東京, 😀",
    "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n",
    "def f(x):\n    return x ** 2  # square",
)


def check_exports(
    merged_dir: str | Path,
    gguf_dir: str | Path,
    reference: Any,
    heldout: Sequence[tuple[str, str]],
    params: ExportChecksParams,
    *,
    loss_on: str = "completion",
) -> dict[str, Any]:
    """Run every check; ``passed`` is true only when each of them passed.

    Args:
        reference: base + adapter, unmerged, in float32.
        heldout: (prompt, completion) pairs of held-out questions, prompts chat-rendered.
        loss_on: which completion tokens training scored (``train_qlora.loss_on``).
    """
    started = time.perf_counter()
    merge, merged_did = check_merged(
        merged_dir,
        reference,
        params.prompts,
        tolerance=params.merge_logit_tolerance,
        greedy_tokens=params.greedy_tokens,
    )
    logger.info(
        "merged vs base + adapter: max |logit diff| %.3g (tolerance %g), greedy %s",
        merge.max_abs_logit_diff,
        merge.tolerance,
        "identical" if merge.greedy_identical else "DIFFERENT",
    )
    record: dict[str, Any] = {
        "merged_size_bytes": sum(f.stat().st_size for f in Path(merged_dir).glob("*.safetensors")),
        "merge": {**merge.as_dict(), "compute_dtype": "float32"},
        "gguf": _check_gguf_files(
            merged_dir,
            gguf_dir,
            merged_did,
            heldout[: params.heldout_completions],
            params,
            loss_on,
        ),
    }
    record["passed"] = record["merge"]["passed"] and record["gguf"]["passed"]
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def _check_gguf_files(
    merged_dir: str | Path,
    gguf_dir: str | Path,
    merged_did: list[GreedyReference],
    heldout: Sequence[tuple[str, str]],
    params: ExportChecksParams,
    loss_on: str,
) -> dict[str, Any]:
    files = files_in(gguf_dir)
    sizes = {kind: path.stat().st_size for kind, path in files.items()}
    if not runtime_available():
        logger.warning("GGUF files not checked: llama-cpp-python is not installed")
        return {
            "runtime": None,
            "sizes": sizes,
            "passed": False,
            "not_checked": "llama.cpp's runtime is not installed: pip install -e '.[llama-cpp]'",
        }
    tokenizer = load_tokenizer(str(merged_dir), embedded_cache_dir="unused")
    config = AutoConfig.from_pretrained(merged_dir)
    prompts_ids = [reference.prompt_ids for reference in merged_did]
    texts = _heldout_completions(tokenizer, heldout, loss_on)
    strings = [*TOKENIZER_STRINGS, _rendered_chat(tokenizer, params.prompts[0])]
    longest = max(len(ids) for ids in [*(p + c for p, c in texts), *prompts_ids])
    n_ctx = 256 * -(-(longest + params.greedy_tokens + params.stop_max_tokens) // 256)
    end_of_turn = tokenizer.convert_tokens_to_ids(gguf_checks.END_OF_TURN)

    results: dict[str, dict[str, Any]] = {}
    reference_scores = None
    for kind, path in files.items():
        step = time.perf_counter()
        llm = gguf_checks.open_gguf(path, n_ctx=n_ctx)
        result: dict[str, Any] = {"file": path.name, "size_bytes": sizes[kind]}
        result["tokenizer"] = gguf_checks.check_tokenizer(llm, tokenizer, strings)
        result["metadata"] = gguf_checks.check_metadata(llm, config, tokenizer)
        result["greedy"] = gguf_checks.check_greedy(
            llm,
            prompts_ids,
            [reference.continuation for reference in merged_did],
            [reference.logits_after_prompt for reference in merged_did],
        )
        result["stop"] = gguf_checks.check_stop(
            llm, end_of_turn, params.prompts[0], params.stop_max_tokens
        )
        scores = gguf_checks.completion_scores(llm, texts)
        if kind == FULL_PRECISION:
            reference_scores = scores
        result["heldout"] = gguf_checks.compare_with_reference(scores, reference_scores)
        result["failures"] = _file_failures(kind, result, params)
        result["passed"] = not result["failures"]
        result["seconds"] = round(time.perf_counter() - step, 1)
        logger.info(
            "%s: tokenizer %s, greedy %s/%s, stop %s, perplexity %.4g (%+.2f%% vs %s), top-1 "
            "agreement %.3f -> %s",
            path.name,
            "ok" if result["tokenizer"]["passed"] else "MISMATCH",
            min(result["greedy"]["identical_prefix_tokens"]),
            result["greedy"]["tokens"],
            result["stop"]["forced_finish_reason"],
            result["heldout"]["perplexity"],
            100 * result["heldout"]["perplexity_change"],
            FULL_PRECISION,
            result["heldout"]["top1_agreement"],
            "passed" if result["passed"] else "FAILED",
        )
        llm.close()
        results[kind] = result
    return {
        "runtime": f"llama-cpp-python {metadata.version('llama-cpp-python')}",
        "heldout_texts": len(texts),
        "heldout_tokens": sum(len(completion) for _, completion in texts),
        "heldout_scored": loss_on,
        "files": results,
        "passed": bool(results) and all(result["passed"] for result in results.values()),
    }


def _heldout_completions(
    tokenizer: Any, heldout: Sequence[tuple[str, str]], loss_on: str
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, scored completion ids) per held-out question: the tokens training put its
    loss on (``train_qlora.loss_on``): the whole completion, or its first token, the letter."""
    texts = []
    for prompt, completion in heldout:
        ids = encode_continuation(tokenizer, completion)
        texts.append(
            (encode_prompt(tokenizer, prompt), ids[:1] if loss_on == "answer_letter" else ids)
        )
    return texts


def _file_failures(kind: str, result: dict[str, Any], params: ExportChecksParams) -> list[str]:
    """What a file missed, in words (none: it passed). All files: the tokenizer, metadata and
    stop checks; the full-precision file: identical greedy continuations; a quantized file:
    the top-1 agreement bound (below it, it no longer carries the fine-tune); q8_0: the
    perplexity bound."""
    failures = [name for name in ("tokenizer", "metadata", "stop") if not result[name]["passed"]]
    heldout = result["heldout"]
    if kind == FULL_PRECISION and not result["greedy"]["identical"]:
        failures.append("greedy tokens differ from transformers")
    agreement = heldout["top1_agreement"]
    if kind != FULL_PRECISION and agreement < params.quantized_min_top1_agreement:
        failures.append(
            f"top-1 agreement {agreement:.1%} < {params.quantized_min_top1_agreement:.0%}"
        )
    change = heldout["perplexity_change"]
    if kind == "q8_0" and abs(change) > params.q8_0_max_perplexity_change:
        failures.append(f"perplexity {change:+.2%} beyond ±{params.q8_0_max_perplexity_change:.0%}")
    return failures


def _rendered_chat(tokenizer: Any, prompt: str) -> str:
    """A whole rendered conversation: user turn, model answer, and the next user turn."""
    return tokenizer.apply_chat_template(
        [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": "The answer is (B)."},
            {"role": "user", "content": "Why?"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
