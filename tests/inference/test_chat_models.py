"""Streaming text piece by piece, and the context check, of the chat models."""

from __future__ import annotations

import pytest

from gemma_pipeline.inference.chat_models import _IncrementalText, check_fits
from gemma_pipeline.inference.errors import UserInputError


def _utf8_decoder(errors: str):
    return lambda ids: bytes(ids).decode("utf-8", errors=errors)


@pytest.mark.parametrize("errors", ["replace", "ignore"])
def test_pieces_join_to_the_whole_text_even_inside_multibyte_characters(errors):
    text = "Zürich → 東京 🙂 ok"
    stream = _IncrementalText(_utf8_decoder(errors))
    pieces = [stream.push(byte) for byte in text.encode("utf-8")]
    pieces.append(stream.rest())
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    assert pieces.count("") > 5  # held back while a character was incomplete


def test_bytes_that_never_form_a_character_come_out_at_the_end():
    stream = _IncrementalText(_utf8_decoder("replace"))
    pieces = [stream.push(b) for b in b"ab\xe2\x86"]
    assert "".join(pieces) == "ab"
    assert stream.rest() == "\ufffd"


def test_the_prompt_and_the_answer_must_fit_the_context():
    check_fits(100, 28, 128)
    with pytest.raises(UserInputError, match="needs 129, more than the model's context of 128"):
        check_fits(100, 29, 128)
