import pytest
import torch
from transformers import (
    DynamicCache,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
)

from gemma_pipeline.modeling.heads import run_backbone
from gemma_pipeline.modeling.shared_prefix import (
    NO_MASKS,
    NO_POSITION,
    PrefixAttention,
    SharedPrefix,
    shared_prefix_attention,
)

SHAPES = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    head_dim=8,
    attn_implementation="eager",
)


def _models():
    torch.manual_seed(0)
    # Windows shorter than the prefix, so sliding layers must mask part of it; Gemma-2 soft-caps.
    yield Gemma2ForCausalLM(Gemma2Config(**SHAPES, num_key_value_heads=2, sliding_window=6))
    layer_types = ["sliding_attention", "sliding_attention", "full_attention"]
    yield Gemma3ForCausalLM(
        Gemma3TextConfig(**SHAPES, num_key_value_heads=1, sliding_window=5, layer_types=layer_types)
    )


def _forward(model, ids, queries, keys, prefix=None, cache=None):
    with shared_prefix_attention(model):
        return run_backbone(
            model,
            input_ids=ids,
            position_ids=queries,
            past_key_values=cache,
            use_cache=cache is not None,
            attention_mask=NO_MASKS,
            prefix_attention=PrefixAttention(queries, keys, prefix),
        ).last_hidden_state


@pytest.mark.parametrize("model", list(_models()), ids=["gemma2", "gemma3"])
@torch.no_grad()
def test_rows_after_one_shared_prefix_equal_whole_eager_forwards(model):
    model.eval()
    prefix_ids = torch.randint(3, 64, (9,)).tolist()
    rows = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    positions = torch.arange(len(prefix_ids))[None]
    cache = DynamicCache()
    _forward(model, torch.tensor([prefix_ids]), positions, positions, cache=cache)
    prefix = SharedPrefix.from_cache(cache)
    assert prefix.length == len(prefix_ids)

    width = max(map(len, rows))  # left-padded, as generation pads
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    keys = torch.full((len(rows), width), NO_POSITION)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = torch.tensor(row)
        keys[b, width - len(row) :] = len(prefix_ids) + torch.arange(len(row))
    queries = keys.clamp(min=0)
    row_cache = DynamicCache()
    hidden = _forward(model, ids, queries, keys, prefix, cache=row_cache)
    # One decoding step on top of the rows' cache.
    step = torch.tensor([[20], [21], [22]])
    step_positions = keys.amax(-1, keepdim=True) + 1
    after = torch.cat([keys, step_positions], dim=1)
    stepped = _forward(model, step, step_positions, after, prefix, cache=row_cache)

    for b, row in enumerate(rows):
        whole = run_backbone(model, input_ids=torch.tensor([prefix_ids + row + [20 + b]]))
        expected = whole.last_hidden_state[0]
        torch.testing.assert_close(hidden[b, width - len(row) :], expected[len(prefix_ids) : -1])
        torch.testing.assert_close(stepped[b, 0], expected[-1])


def test_forward_without_positions_is_refused():
    model = next(_models())
    with shared_prefix_attention(model), pytest.raises(ValueError, match="prefix_attention"):
        run_backbone(model, input_ids=torch.tensor([[1, 2]]), attention_mask=NO_MASKS)
    assert model.config._attn_implementation == "eager"  # restored after the block
