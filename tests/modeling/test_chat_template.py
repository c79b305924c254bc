"""Gemma's chat template renders exactly Gemma's turn format."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
from jinja2.exceptions import TemplateError

from gemma_pipeline.modeling.chat_template import GEMMA_CHAT_TEMPLATE, ensure_chat_template


def test_user_and_model_turns_render_gemma_format(tiny_tokenizer: Any) -> None:
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "  4  "},
        {"role": "user", "content": "And 3+3?"},
    ]
    rendered = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n"
        "<start_of_turn>user\nAnd 3+3?<end_of_turn>\n"
    )


def test_generation_prompt_opens_a_model_turn(tiny_tokenizer: Any) -> None:
    rendered = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_system_role_is_rejected(tiny_tokenizer: Any) -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
    ]
    with pytest.raises(TemplateError, match="System role not supported"):
        tiny_tokenizer.apply_chat_template(messages, tokenize=False)


def test_roles_must_alternate(tiny_tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(TemplateError, match="alternate"):
        tiny_tokenizer.apply_chat_template(messages, tokenize=False)


def test_tokenized_chat_has_a_single_bos(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=True, return_dict=False
    )
    assert ids.count(tiny_tokenizer.bos_token_id) == 1
    assert ids[0] == tiny_tokenizer.bos_token_id


def test_ensure_chat_template_sets_a_missing_template() -> None:
    tokenizer = SimpleNamespace(chat_template=None)
    assert ensure_chat_template(tokenizer) is tokenizer
    assert tokenizer.chat_template == GEMMA_CHAT_TEMPLATE


def test_ensure_chat_template_keeps_an_existing_template(tiny_tokenizer: Any) -> None:
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    ensure_chat_template(tokenizer)
    assert tokenizer.chat_template == "{{ messages[0]['content'] }}"
