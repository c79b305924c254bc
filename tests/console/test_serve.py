"""`gemma-pipeline serve`: llama.cpp's OpenAI-compatible server, called with OpenAI's client."""

from __future__ import annotations

import urllib.request

import pytest
from openai import OpenAI

from gemma_pipeline.console import main
from gemma_pipeline.inference.server import stop

QUESTION = "Which planet is known as the red planet?"


def test_streamed_greedy_chat_equals_ask_with_the_gguf(server, tiny_project, capsys):
    base_url, models, _ = server
    assert models == ["gemma-2-2b-it-mmlu-qlora"]  # export.name: what clients ask for
    client = OpenAI(base_url=base_url, api_key="unused")
    stream = client.chat.completions.create(
        model=models[0],
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=24,
        stream=True,
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    served = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert len(chunks) > 2  # streamed, not one block
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")

    code = main(
        [
            "ask",
            "--project",
            str(tiny_project),
            "--model",
            "gguf",
            "--max-new-tokens",
            "24",
            QUESTION,
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    assert served.strip()
    assert out == served + "\n"


def test_temperature_zero_is_greedy_whatever_the_servers_penalty_default(server):
    """llama-cpp-python's server alone defaults repeat_penalty to 1.1; serve makes it 1.0, so a
    plain request at temperature 0 and one asking for no penalty get the same answer."""
    base_url, models, _ = server
    client = OpenAI(base_url=base_url, api_key="unused")
    messages = [{"role": "user", "content": "Repeat: a a a a a a a a"}]

    def ask(**extra):
        reply = client.chat.completions.create(
            model=models[0], messages=messages, temperature=0, max_tokens=32, extra_body=extra
        )
        return reply.choices[0].message.content

    assert ask() == ask(repeat_penalty=1.0)
    assert ask(repeat_penalty=1.5) != ask()  # the penalty is there when asked for


def test_curl_style_request_and_the_server_stops(server):
    base_url, models, process = server
    body = (
        b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'
        % models[0].encode()
    )
    request = urllib.request.Request(
        f"{base_url}/chat/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    stop(process)
    assert process.poll() is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base_url}/models", timeout=2)
