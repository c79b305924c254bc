"""Batched multiple-choice scoring with one prompt forward per question.

For each question the prompt runs through the model once; its KV cache is then shared by every
continuation scored after it (each option's text, and the reference completion for perplexity),
and the answer-letter distribution is read off the prompt's last position. Logits are projected
only at the positions that are scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from gemma_pipeline.modeling.heads import project_to_logits, run_backbone


@dataclass(frozen=True)
class MultipleChoiceItem:
    prompt: str  # chat-templated, ends where the model's answer starts
    choices: Sequence[str]  # option texts, scored as continuations of the prompt
    letters: Sequence[str]  # the letter of each option, scored as the next token
    completion: str  # the reference completion, for perplexity


@dataclass(frozen=True)
class ItemScore:
    letter_logprobs: list[float]  # log p(letter | prompt) for each option's letter
    letter_mass: float  # total probability on the valid letters
    option_logprobs: list[float]  # sum of log p(option text tokens | prompt)
    option_tokens: list[int]
    completion_nll: float  # sum of -log p over the reference completion's tokens
    completion_tokens: int


def letter_token_ids(tokenizer: PreTrainedTokenizerBase, letters: Sequence[str]) -> list[int]:
    """The token that starts a completion with each letter (as the tokenize stage encodes it)."""
    ids = []
    for letter in letters:
        encoded = tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ValueError(f"Answer letter {letter!r} is not a single token: {encoded}")
        ids.append(encoded[0])
    return ids


def _encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


@torch.inference_mode()
def score_items(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[MultipleChoiceItem],
    batch_size: int = 8,
    desc: str = "scoring",
) -> list[ItemScore]:
    """Score every item; results come back in the order of ``items``."""
    device = next(model.parameters()).device
    prompts = [_encode_prompt(tokenizer, item.prompt) for item in items]
    # Longest first: similar lengths share a batch (less padding), and memory peaks at once.
    order = sorted(range(len(items)), key=lambda i: -len(prompts[i]))
    results: dict[int, ItemScore] = {}
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        batch = order[start : start + batch_size]
        scores = _score_batch(
            model, tokenizer, [items[i] for i in batch], [prompts[i] for i in batch], device
        )
        results.update(zip(batch, scores, strict=True))
    return [results[i] for i in range(len(items))]


def _score_batch(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[MultipleChoiceItem],
    prompts: Sequence[list[int]],
    device: torch.device,
) -> list[ItemScore]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(ids) for ids in prompts)
    # Left-pad the prompts so every prompt ends at the same position.
    prompt_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        prompt_ids[row, width - len(ids) :] = torch.tensor(ids)
        prompt_mask[row, width - len(ids) :] = 1
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    out = run_backbone(
        model,
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
    )
    next_logprobs = torch.log_softmax(project_to_logits(model, out.last_hidden_state[:, -1]), -1)

    # One continuation row per option plus one for the reference completion, per item.
    continuations, owners = [], []
    for row, item in enumerate(items):
        for text in [*item.choices, item.completion]:
            continuations.append(tokenizer(text, add_special_tokens=False)["input_ids"])
            owners.append(row)
    cont_width = max(len(ids) for ids in continuations)
    cont_ids = torch.full((len(continuations), cont_width), pad, dtype=torch.long)
    cont_mask = torch.zeros((len(continuations), cont_width), dtype=torch.long)
    for row, ids in enumerate(continuations):
        cont_ids[row, : len(ids)] = torch.tensor(ids)
        cont_mask[row, : len(ids)] = 1
    owner_index = torch.tensor(owners, device=device)
    cache = out.past_key_values
    cache.batch_select_indices(owner_index)
    cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
    lengths = prompt_mask.sum(-1)[owner_index]
    cont_out = run_backbone(
        model,
        input_ids=cont_ids,
        attention_mask=torch.cat([prompt_mask[owner_index], cont_mask], dim=-1),
        position_ids=lengths[:, None] + torch.arange(cont_width, device=device)[None, :],
        past_key_values=cache,
        use_cache=True,
    )
    # Token k of a continuation is predicted by position k-1 (the prompt's last one for k = 0).
    hidden = cont_out.last_hidden_state[:, :-1]
    inner_mask = cont_mask[:, 1:].bool()
    inner = torch.log_softmax(project_to_logits(model, hidden[inner_mask]), -1)
    token_logprobs = torch.zeros(cont_mask.shape, device=device)
    token_logprobs[:, 1:][inner_mask] = inner.gather(-1, cont_ids[:, 1:][inner_mask][:, None])[:, 0]
    token_logprobs[:, 0] = next_logprobs[owner_index].gather(-1, cont_ids[:, :1])[:, 0]
    sums = (token_logprobs * cont_mask).sum(-1).tolist()
    counts = cont_mask.sum(-1).tolist()

    scores, cursor = [], 0
    for row, item in enumerate(items):
        letters = torch.tensor(letter_token_ids(tokenizer, item.letters), device=device)
        letter_logprobs = next_logprobs[row, letters]
        n = len(item.choices)
        scores.append(
            ItemScore(
                letter_logprobs=letter_logprobs.tolist(),
                letter_mass=float(letter_logprobs.exp().sum()),
                option_logprobs=sums[cursor : cursor + n],
                option_tokens=counts[cursor : cursor + n],
                completion_nll=-sums[cursor + n],
                completion_tokens=int(counts[cursor + n]),
            )
        )
        cursor += n + 1
    return scores
