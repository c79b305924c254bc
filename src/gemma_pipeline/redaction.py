"""Cutting credentials out of what a run shows: parameters, messages, reports.

Its own module because more than W&B needs it: the report redacts the parameters it prints,
and the tracking hook redacts the config and every warning it writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: A parameter whose name contains one of these (any case) is a credential.
SECRET_MARKERS = ("key", "token", "secret", "password")
REDACTED = "***"


def is_secret_name(name: object) -> bool:
    """Whether a mapping key names a credential (``api_key``, ``hubToken``, ``PASSWORD``...)."""
    lowered = str(name).lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def redact(value: Any, secrets: Iterable[str] = (), *, by_name: bool = True) -> Any:
    """A copy of ``value`` with every credential replaced by ``"***"``, at any depth.

    With ``by_name`` (for parameters), a value under a key naming a credential
    (:func:`is_secret_name`) is replaced whole, unless it is a mapping: then its strings are
    replaced and its numbers kept, so a section such as ``tokenize: {max_length: 512}`` survives
    while ``hf_token: {value: ...}`` does not. Known secret strings (``secrets``) are cut out of
    every other string, so a key that ended up inside a URL or a message does not slip through
    under an innocent name.
    """
    known = [secret for secret in secrets if secret]
    return _redact(value, known, inside_secret=False, by_name=by_name)


def _redact(value: Any, secrets: list[str], inside_secret: bool, by_name: bool) -> Any:
    if isinstance(value, Mapping):
        redacted = {}
        for key, item in value.items():
            secret_name = by_name and is_secret_name(key)
            if secret_name and not isinstance(item, Mapping):
                redacted[key] = REDACTED
            else:
                redacted[key] = _redact(item, secrets, inside_secret or secret_name, by_name)
        return redacted
    if isinstance(value, list | tuple):
        return [_redact(item, secrets, inside_secret, by_name) for item in value]
    if isinstance(value, str):
        return REDACTED if inside_secret else scrub(value, secrets)
    return value


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a known secret replaced by ``"***"``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
