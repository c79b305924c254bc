"""The model side of lm-evaluation-harness's seam: ``loglikelihood`` and ``generate_until``.

Tasks (``evaluation/tasks``) turn documents into requests; these two functions answer them the
way lm-eval's HF backend does (same tokenization of context and continuation, same greedy
decoding and stop handling), only faster:

- requests are length-sorted and batched by a token budget, not a fixed count;
- a context's tokens that many requests share (a task's few-shot block) run through the model
  once, and every row of every batch that starts with them attends to that one KV cache, never
  to a copy of it (``modeling/shared_prefix.py``);
- requests with the same input tokens share a row (MMLU's four one-token answers are read off
  one position), and logits are projected only at the positions that are scored;
- the same engine scores the held-out diagnostics (``evaluation/heldout.py``): their requests
  keep the chat prompt intact (``LoglikelihoodRequest.intact_context``);
- generation is batched greedy decoding over the same shared prefix (GSM8K's 5-shot block once
  per task, not once per row), each row cut at lm-eval's stop sequences; rows that have stopped
  leave the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedTokenizerBase

from gemma_pipeline.modeling.compiled import compiled_layers
from gemma_pipeline.modeling.heads import (
    next_token_logits,
    project_to_logits,
    run_backbone,
)
from gemma_pipeline.modeling.shared_prefix import (
    NO_MASKS,
    NO_POSITION,
    PrefixAttention,
    RowCache,
    SharedPrefix,
    attends_eagerly,
    shared_prefix_attention,
)
from gemma_pipeline.prompting import (
    encode_prompts,
    encode_tails,
    splits_exactly,
)

logger = logging.getLogger(__name__)

#: Positions projected through the LM head at once (x vocabulary x 4 bytes of float32 logits).
HEAD_CHUNK = 256
#: Shortest row a loglikelihood batch takes, as a share of its widest: bounds the padding.
MIN_FILL = 0.8
#: Generation steps between stop checks (a device sync and a decode of every row's new text).
STOP_CHECK_EVERY = 16


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str
    # A leading part of ``context`` that many requests share (a few-shot block). Its tokens run
    # through the model once; "" shares nothing. It never changes the result, only the speed.
    shared_prefix: str = ""
    # False: lm-eval's pair encoding (the whole text is encoded and split after the context,
    # whose trailing whitespace moves into the continuation). True: the context is encoded as
    # written and the continuation on its own, so a chat prompt keeps its final newline and the
    # continuation's first token is the one training put a label on.
    intact_context: bool = False


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float  # sum of log p(continuation tokens | context)
    is_greedy: bool  # every continuation token is the argmax
    tokens: int  # continuation length in tokens


@dataclass(frozen=True)
class GenerationRequest:
    context: str
    until: tuple[str, ...]  # stop sequences; the output is cut at the first of them
    max_gen_toks: int = 256


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    intact: Sequence[bool] | None = None,
    prefixes: Sequence[str] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(context tokens, continuation tokens) per (context, continuation) pair.

    lm-eval's rule for a causal LM (``HFLM._encode_pair``): the whole text is encoded and split
    after the context's tokens, and trailing spaces of the context move to the continuation.
    Where ``intact[i]``: the context as written, the continuation encoded on its own. Every
    context gets exactly one BOS (``prompting.encode_prompts``).

    The same tokens, encoded in pieces where that is exact (``splits_exactly``): a context that
    starts with ``prefixes[i]`` (a few-shot block shared by many requests) is the block's tokens,
    encoded once, then its own rest; a continuation whose first character no token joins to the
    context's last is encoded on its own. MMLU's 56k requests then encode ~100 tokens each
    instead of the whole ~700-token prompt four times.
    """
    intact = list(intact) if intact is not None else [False] * len(pairs)
    prefixes = list(prefixes) if prefixes is not None else [""] * len(pairs)
    plans = []  # (context, continuation, continuation encoded alone, where the context splits)
    for (context, continuation), keep, prefix in zip(pairs, intact, prefixes, strict=True):
        n_spaces = 0 if keep else len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        shared = prefix and context.startswith(prefix)
        cut = len(prefix) if shared and splits_exactly(tokenizer, context, len(prefix)) else 0
        alone = keep or splits_exactly(tokenizer, context + continuation, len(context))
        plans.append((context, continuation, alone, cut))

    prompts: dict[str, None] = {}  # encoded with one BOS
    tails: dict[str, None] = {}  # encoded with no special tokens
    for context, continuation, alone, cut in plans:
        for text in (context,) if alone else (context, context + continuation):
            if cut:
                prompts[text[:cut]] = tails[text[cut:]] = None
            else:
                prompts[text] = None
        if alone:
            tails[continuation] = None
    prompt_ids = dict(zip(prompts, encode_prompts(tokenizer, list(prompts)), strict=True))
    tail_ids = dict(zip(tails, encode_tails(tokenizer, list(tails)), strict=True))

    def ids(text: str, cut: int) -> list[int]:
        return prompt_ids[text[:cut]] + tail_ids[text[cut:]] if cut else prompt_ids[text]

    encoded = []
    for context, continuation, alone, cut in plans:
        context_ids = ids(context, cut)
        if alone:
            encoded.append((context_ids, tail_ids[continuation]))
        else:
            encoded.append((context_ids, ids(context + continuation, cut)[len(context_ids) :]))
    return encoded


@dataclass
class _Row:
    """Input tokens after the shared prefix, and the requests scored on them."""

    tokens: tuple[int, ...]
    # (request index, position in ``tokens`` predicting the first continuation token, targets)
    targets: list[tuple[int, int, list[int]]]


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _batches(
    rows: list[_Row], max_batch_tokens: int, max_batch_size: int, prefix_length: int = 0
) -> list[list[_Row]]:
    """Longest first; each batch's rows x (shared prefix + padded length) within the budget,
    and no row shorter than ``MIN_FILL`` of the batch's width (its first, longest row).

    The prefix counts because every row's queries score every prefix position. The fill rule
    bounds padding: on MMLU it cut the padded tokens from 2.10M to 1.55M (1.42M real).
    """
    rows = sorted(rows, key=lambda row: -len(row.tokens))
    batches: list[list[_Row]] = []
    for row in rows:
        if batches:
            current = batches[-1]
            width = len(current[0].tokens)
            if (
                len(current) < max_batch_size
                and (prefix_length + width) * (len(current) + 1) <= max_batch_tokens
                and len(row.tokens) >= MIN_FILL * width
            ):
                current.append(row)
                continue
        batches.append([row])
    return batches


@torch.inference_mode()
def loglikelihood(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[LoglikelihoodRequest],
    *,
    max_batch_tokens: int = 16384,
    max_batch_size: int = 512,
    desc: str = "loglikelihood",
) -> list[LoglikelihoodResult]:
    """log p(continuation | context) for every request, in request order."""
    if not requests:
        return []
    device = next(model.parameters()).device
    encoded = encode_pairs(
        tokenizer,
        [(r.context, r.continuation) for r in requests],
        [r.intact_context for r in requests],
        [r.shared_prefix for r in requests],
    )
    prefixes = list(dict.fromkeys(r.shared_prefix for r in requests if r.shared_prefix))
    prefix_ids = dict(zip(prefixes, encode_prompts(tokenizer, prefixes), strict=True))

    # Group requests by the tokens their shared prefix really contributes: the KV of a token
    # depends only on the tokens before it, so any common leading run of tokens can be reused.
    groups: dict[tuple[int, ...], dict[tuple[int, ...], _Row]] = {}
    for index, (request, (context, continuation)) in enumerate(zip(requests, encoded, strict=True)):
        if not continuation:
            raise ValueError(f"request {index}: the continuation {request.continuation!r} is empty")
        shared = 0
        if request.shared_prefix:
            shared = _common_prefix_length(prefix_ids[request.shared_prefix], context)
            shared = min(shared, len(context) - 1)  # keep the last context token in the row
        full = [*context, *continuation]
        prefix, tokens = tuple(full[:shared]), tuple(full[shared:-1])
        row = groups.setdefault(prefix, {}).setdefault(tokens, _Row(tokens, []))
        row.targets.append((index, len(context) - 1 - shared, continuation))

    logprobs = [0.0] * len(requests)
    greedy = [True] * len(requests)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n_rows = sum(len(rows) for rows in groups.values())
    progress = tqdm(total=n_rows, desc=desc, unit="row")
    # On CUDA the decoder layers run compiled (``modeling/compiled.py``): the elementwise
    # chains between the matrix products fused. On the CPU compiling costs more than it saves.
    with compiled_layers(model) if device.type == "cuda" else nullcontext():
        for prefix, rows in groups.items():
            shared = run_prefix(model, prefix, device) if prefix else None
            for batch in _batches(
                list(rows.values()), max_batch_tokens, max_batch_size, len(prefix)
            ):
                _score_batch(model, batch, shared, pad, device, logprobs, greedy)
                progress.update(len(batch))
    progress.close()
    return [
        LoglikelihoodResult(logprob, is_greedy, len(continuation))
        for logprob, is_greedy, (_, continuation) in zip(logprobs, greedy, encoded, strict=True)
    ]


def run_prefix(model: torch.nn.Module, prefix: Sequence[int], device: torch.device) -> SharedPrefix:
    """The KV cache of ``prefix`` (positions 0..P-1), for ``PrefixAttention``."""
    positions = torch.arange(len(prefix), device=device)[None]
    cache = DynamicCache()  # no sliding layers: every prefix position is kept
    with shared_prefix_attention(model):
        run_backbone(
            model,
            input_ids=torch.tensor([list(prefix)], device=device),
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            attention_mask=NO_MASKS,
            prefix_attention=PrefixAttention(positions, positions),
        )
    return SharedPrefix.from_cache(cache)


def _score_batch(
    model: torch.nn.Module,
    batch: list[_Row],
    prefix: SharedPrefix | None,
    pad: int,
    device: torch.device,
    logprobs: list[float],
    greedy: list[bool],
) -> None:
    width = len(batch[0].tokens)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, row in enumerate(batch):
        input_ids[b, : len(row.tokens)] = torch.tensor(row.tokens)
        mask[b, : len(row.tokens)] = 1
    input_ids = input_ids.to(device)
    if prefix is None:
        hidden = run_backbone(
            model, input_ids=input_ids, attention_mask=mask.to(device), use_cache=False
        ).last_hidden_state
    else:
        positions = (prefix.length + torch.arange(width, device=device)).expand(len(batch), -1)
        keys = positions.masked_fill(mask.to(device) == 0, NO_POSITION)
        with shared_prefix_attention(model):
            hidden = run_backbone(
                model,
                input_ids=input_ids,
                position_ids=positions,
                use_cache=False,
                attention_mask=NO_MASKS,
                prefix_attention=PrefixAttention(positions, keys, prefix),
            ).last_hidden_state

    # Every (row, position) whose next-token distribution is read, each projected once; and
    # every (position, target token) pair a request needs.
    positions: dict[tuple[int, int], int] = {}
    pairs: list[tuple[int, int]] = []
    for b, row in enumerate(batch):
        for _, start, targets in row.targets:
            for offset, token in enumerate(targets):
                pairs.append((positions.setdefault((b, start + offset), len(positions)), token))
    slots = torch.tensor([slot for slot, _ in pairs], device=device)
    tokens = torch.tensor([token for _, token in pairs], device=device)
    picked = torch.empty(len(pairs), device=device)
    argmax = torch.empty(len(positions), dtype=torch.long, device=device)
    selected = hidden[
        torch.tensor([b for b, _ in positions], device=device),
        torch.tensor([p for _, p in positions], device=device),
    ]
    # The vocabulary is large (256k): project a bounded number of positions at a time.
    for first in range(0, len(positions), HEAD_CHUNK):
        last = min(first + HEAD_CHUNK, len(positions))
        log_probs = torch.log_softmax(project_to_logits(model, selected[first:last]), -1)
        argmax[first:last] = log_probs.argmax(-1)
        inside = (slots >= first) & (slots < last)
        picked[inside] = log_probs[slots[inside] - first, tokens[inside]]
    picked, greedy_pairs = picked.tolist(), (argmax[slots] == tokens).tolist()
    cursor = 0
    for row in batch:
        for index, _, targets in row.targets:
            span = slice(cursor, cursor + len(targets))
            logprobs[index] = float(sum(picked[span]))
            greedy[index] = all(greedy_pairs[span])
            cursor += len(targets)


def cut_at_stop_sequences(text: str, until: Sequence[str]) -> str:
    """lm-eval's post-processing: cut at each stop sequence in turn."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


@torch.inference_mode()
def generate_until(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[GenerationRequest],
    *,
    batch_size: int = 32,
    desc: str = "generate",
) -> list[str]:
    """Greedy continuation of every context, cut at its stop sequences (lm-eval's rules).

    For a model with eager attention (Gemma-2: its softcaps rule out SDPA), the tokens every
    context of a group starts with (a few-shot block) run once; rows hold only what follows,
    left-padded and grouped by length (``greedy_decode``). A model with a fused attention
    generates whole contexts with ``model.generate`` instead. A row leaves its batch once it has
    produced a stop sequence or the end-of-sequence token (checked every ``STOP_CHECK_EVERY``
    steps; text past a stop is cut, as lm-eval cuts it), and the batch ends when every row has.
    """
    if not requests:
        return []
    contexts = encode_prompts(tokenizer, [r.context for r in requests])
    eos = tokenizer.eos_token_id
    eos_text = tokenizer.decode([eos]) if eos is not None else ""
    order = sorted(range(len(requests)), key=lambda i: -len(contexts[i]))
    outputs: list[str] = [""] * len(requests)
    groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
    for i in order:  # one batch series per (stop sequences, budget), as lm-eval groups them
        groups.setdefault((requests[i].until, requests[i].max_gen_toks), []).append(i)
    progress = tqdm(total=len(requests), desc=desc, unit="request")
    for (until, max_gen_toks), members in groups.items():
        stops = [s for s in (*until, eos_text) if s]
        texts = _generate_group(
            model,
            tokenizer,
            [contexts[i] for i in members],
            max_gen_toks,
            stops,
            batch_size,
            progress,
        )
        for i, text in zip(members, texts, strict=True):
            outputs[i] = text
    progress.close()
    return outputs


def _generate_group(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[Sequence[int]],
    max_gen_toks: int,
    stops: list[str],
    batch_size: int,
    progress: tqdm,
) -> list[str]:
    """Texts of contexts (longest first) that share their stop sequences and budget."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def text_of(tokens: list[int]) -> tuple[str, bool]:
        """(the text cut at its stops, whether it has ended)."""
        ended = eos is not None and eos in tokens
        if ended:
            tokens = tokens[: tokens.index(eos)]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        return cut_at_stop_sequences(text, stops), ended or any(s in text for s in stops)

    eager = attends_eagerly(model)
    shared = _shared_length(contexts) if eager else 0
    prefix = (
        run_prefix(model, contexts[0][:shared], next(model.parameters()).device) if shared else None
    )
    texts: list[str] = []
    for start in range(0, len(contexts), batch_size):
        batch = contexts[start : start + batch_size]
        if eager:
            rows = [context[shared:] for context in batch]
            generated = greedy_decode(
                model, rows, prefix, max_gen_toks, lambda tokens: text_of(tokens)[1], pad=pad
            )
            texts += [text_of(tokens)[0] for tokens in generated]
        else:
            texts += _generate_fused(model, tokenizer, batch, max_gen_toks, stops, pad)
        progress.update(len(batch))
    return texts


def _generate_fused(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[Sequence[int]],
    max_gen_toks: int,
    stops: list[str],
    pad: int,
) -> list[str]:
    """``model.generate`` on whole left-padded contexts, with the model's own fused attention.

    For a model that attends with SDPA or flex (Gemma 3 has no softcap): on the CPU a fused
    kernel over every context's few-shot block beat the shared prefix's float32 score matrices
    (10 GSM8K rows of the demo, 2 cores: 11.5 s against 16.9 s for 64 tokens).
    """
    device = next(model.parameters()).device
    input_ids, index = _left_padded(contexts, pad)
    width = input_ids.shape[1]
    generated = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=(index >= 0).long().to(device),
        max_new_tokens=max_gen_toks,
        do_sample=False,
        stop_strings=stops,
        tokenizer=tokenizer,
        pad_token_id=pad,
    )
    return [
        cut_at_stop_sequences(tokenizer.decode(row[width:], skip_special_tokens=True), stops)
        for row in generated
    ]


def _left_padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[rows, width]`` padded on the left, and each token's index in its row
    (-1 on padding)."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    index = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, width - len(row) :] = torch.tensor(row)
        index[b, width - len(row) :] = torch.arange(len(row))
    return input_ids, index


def _shared_length(contexts: Sequence[Sequence[int]]) -> int:
    """Leading tokens all contexts share, keeping at least one token of each in its row."""
    shared = min(len(c) for c in contexts) - 1
    for context in contexts[1:]:
        shared = min(shared, _common_prefix_length(contexts[0], context))
    return max(shared, 0)


def greedy_decode(
    model: torch.nn.Module,
    rows: Sequence[Sequence[int]],
    prefix: SharedPrefix | None,
    max_new_tokens: int,
    stopped: Callable[[list[int]], bool],
    *,
    pad: int = 0,
    check_every: int = STOP_CHECK_EVERY,
    fixed_shapes: bool | None = None,
) -> list[list[int]]:
    """Greedy new tokens of each row (its tokens after ``prefix``), as ``model.generate`` picks.

    Every ``check_every`` steps the rows whose tokens so far are ``stopped`` are done; the
    others go on to ``max_new_tokens``. ``fixed_shapes`` (the default on CUDA): the rows' cache
    is preallocated and each step is replayed as one CUDA graph, so a step costs its kernels,
    not the launching of a few thousand of them; done rows stay in the batch. Otherwise the
    cache grows and done rows leave the batch.
    """
    device = next(model.parameters()).device
    offset = prefix.length if prefix is not None else 0
    input_ids, index = _left_padded(rows, pad)
    keys = torch.where(index >= 0, offset + index, NO_POSITION)  # absolute positions
    input_ids, keys = input_ids.to(device), keys.to(device)
    if fixed_shapes is None:
        fixed_shapes = device.type == "cuda"
    with shared_prefix_attention(model):
        if fixed_shapes:
            return _decode_fixed(
                model, input_ids, keys, prefix, max_new_tokens, stopped, check_every
            )
        return _decode_growing(model, input_ids, keys, prefix, max_new_tokens, stopped, check_every)


def _forward(model, input_ids, queries, keys, prefix, cache) -> torch.Tensor:
    """The next token of every row: its greedy argmax after ``input_ids``."""
    hidden = run_backbone(
        model,
        input_ids=input_ids,
        position_ids=queries,
        past_key_values=cache,
        use_cache=True,
        attention_mask=NO_MASKS,
        prefix_attention=PrefixAttention(queries, keys, prefix),
    ).last_hidden_state
    return next_token_logits(model, hidden[:, -1]).argmax(-1, keepdim=True)


def _decode_growing(model, input_ids, keys, prefix, max_new_tokens, stopped, check_every):
    cache = DynamicCache()
    generated: list[list[int]] = [[] for _ in range(len(input_ids))]
    active = list(range(len(input_ids)))
    queries = keys.clamp(min=0)  # a pad's query reads garbage that nothing uses
    pending: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        input_ids = _forward(model, input_ids, queries, keys, prefix, cache)
        pending.append(input_ids)
        last = step + 1 == max_new_tokens
        if last or (step + 1) % check_every == 0:
            new = torch.cat(pending, dim=1).tolist()
            pending = []
            for row, tokens in zip(active, new, strict=True):
                generated[row].extend(tokens)
            going = [k for k, row in enumerate(active) if not stopped(generated[row])]
            if last or not going:
                break
            if len(going) < len(active):
                index = torch.tensor(going, device=input_ids.device)
                cache.batch_select_indices(index)
                input_ids, keys = input_ids[index], keys[index]
                active = [active[k] for k in going]
        queries = keys.amax(-1, keepdim=True) + 1
        keys = torch.cat([keys, queries], dim=1)
    return generated


def _decode_fixed(model, input_ids, keys, prefix, max_new_tokens, stopped, check_every):
    batch, width = input_ids.shape
    device = input_ids.device
    cache = RowCache(width + max_new_tokens, device)
    key_positions = torch.full((batch, width + max_new_tokens), NO_POSITION, device=device)
    key_positions[:, :width] = keys
    cache.index = torch.arange(width, device=device)
    out = torch.zeros((batch, max_new_tokens), dtype=torch.long, device=device)
    out[:, :1] = _forward(model, input_ids, keys.clamp(min=0), key_positions, prefix, cache)
    # The step's inputs live in fixed buffers; the step updates them itself.
    tokens = out[:, :1].clone()
    queries = keys.amax(-1, keepdim=True) + 1
    cache.index = torch.full((1,), width, dtype=torch.long, device=device)

    def step() -> None:
        key_positions.index_copy_(1, cache.index, queries)
        next_tokens = _forward(model, tokens, queries, key_positions, prefix, cache)
        out.index_copy_(1, cache.index - (width - 1), next_tokens)
        tokens.copy_(next_tokens)
        queries.add_(1)
        cache.index.add_(1)

    replay = step
    done = 1
    if device.type == "cuda" and max_new_tokens > 3:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (real steps): lazy inits happen outside capture
            step()
            step()
        torch.cuda.current_stream().wait_stream(side)
        done = 3
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()  # recorded, not run
        replay = graph.replay
    while done < max_new_tokens:
        replay()
        done += 1
        if done % check_every == 0 and done < max_new_tokens:
            so_far = out[:, :done].tolist()
            if all(stopped(tokens) for tokens in so_far):
                break
    return [row[:done] for row in out.tolist()]
