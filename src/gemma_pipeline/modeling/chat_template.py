"""Gemma's chat template, for tokenizers that ship without one.

The embedded Gemma 3 270M is a *base* checkpoint and its GGUF carries no chat template, yet the
pipeline formats every prompt through ``apply_chat_template`` so that the embedded model and the
real instruction-tuned ``google/gemma-2-2b-it`` see the same layout.
"""

from __future__ import annotations

from typing import Any

#: Gemma's official chat template, verbatim from ``google/gemma-2-2b-it``'s
#: ``tokenizer_config.json`` (also used by gemma-7b-it and gemma-2-9b-it). It starts with
#: ``bos_token`` itself, so a rendered string must be tokenized with
#: ``add_special_tokens=False`` or it gets a second ``<bos>``.
GEMMA_CHAT_TEMPLATE: str = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if (message['role'] == 'assistant') %}"
    "{% set role = 'model' %}"
    "{% else %}"
    "{% set role = message['role'] %}"
    "{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<start_of_turn>model\\n'}}"
    "{% endif %}"
)


def ensure_chat_template(tokenizer: Any) -> Any:
    """Give ``tokenizer`` Gemma's chat template unless it already has one.

    An existing template is kept because the hub's instruction-tuned Gemma ships its own,
    which is the authority for that checkpoint. The tokenizer is modified in place and
    returned so the call can be chained.
    """
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return tokenizer
