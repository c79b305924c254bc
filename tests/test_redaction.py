"""Credentials are cut out of parameters and messages, whatever they are nested in."""

from __future__ import annotations

from gemma_pipeline.redaction import REDACTED, redact

SECRET = "wandb-secret-test-key-123"


def test_redact_replaces_credentials_at_any_depth_and_keeps_the_rest():
    params = {
        "API_KEY": SECRET,
        "model": {"name_or_path": "g", "hubToken": SECRET, "dtype": "bfloat16"},
        "sources": [{"password": SECRET, "path": "x"}, {"client_secret": [SECRET, SECRET]}],
        # A section whose name contains "token" keeps its numbers; its strings are redacted.
        "tokenize": {"max_length": 512, "padding_side": "right"},
        "hf_token": {"value": SECRET},
        "url": f"https://user:{SECRET}@example.com",
    }
    redacted = redact(params, secrets=[SECRET])
    assert redacted == {
        "API_KEY": REDACTED,
        "model": {"name_or_path": "g", "hubToken": REDACTED, "dtype": "bfloat16"},
        "sources": [{"password": REDACTED, "path": "x"}, {"client_secret": REDACTED}],
        "tokenize": {"max_length": 512, "padding_side": REDACTED},
        "hf_token": {"value": REDACTED},
        "url": f"https://user:{REDACTED}@example.com",
    }
    assert params["API_KEY"] == SECRET  # a copy: the input is untouched
    # Names that are not parameters (dataset names such as "tokenized") keep their values.
    assert redact({"tokenized": "v1", "x": SECRET}, [SECRET], by_name=False) == {
        "tokenized": "v1",
        "x": REDACTED,
    }
