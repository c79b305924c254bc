"""Issue 14: `gemma-pipeline serve` under bad input and load, on 127.0.0.1, stopped after."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from openai import OpenAI

from gemma_pipeline.inference.server import request_problem


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _chat(model: str, content: str, **extra) -> bytes:
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    ).encode()


def test_bad_requests_get_a_400_that_says_why_and_the_server_stays_up(server):
    base_url, models, process = server
    model = models[0]
    url = f"{base_url}/chat/completions"
    bad = {
        b'{"model": "m", "messages": [': "not valid JSON",
        b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}': "UTF-8",
        _chat(model, ""): "empty",
        json.dumps({"model": model, "messages": []}).encode(): "non-empty list",
        _chat(model, "word " * 20000, max_tokens=4): "context length",
        _chat(model, "hi", max_tokens=10**7): "above the context length",
    }
    for body, reason in bad.items():
        status, answer = _post(url, body)
        assert status == 400, (body[:60], status, answer)
        assert reason in answer["error"]["message"], answer
        assert process.poll() is None  # still serving
    status, answer = _post(url, _chat(model, "hi", max_tokens=4))
    assert status == 200 and answer["choices"][0]["message"]["content"]
    status, answer = _post(
        f"{base_url}/completions", json.dumps({"model": model, "prompt": ""}).encode()
    )
    assert status == 400 and "'prompt' is empty" in answer["error"]["message"]


def test_twenty_concurrent_streams_all_complete(server, record_property):
    base_url, models, process = server
    model = models[0]
    client = OpenAI(base_url=base_url, api_key="unused", timeout=120)

    def stream(i: int) -> tuple[float, str]:
        started = time.perf_counter()
        pieces = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"Question {i}: name a colour."}],
            max_tokens=16,
            temperature=0,
            stream=True,
        )
        text, finish = "", None
        for chunk in pieces:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        return time.perf_counter() - started, text, finish

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(stream, range(20)))
    # Every stream ran to its end: the token budget, or the model's end of turn.
    assert [finish for *_, finish in results] and all(f in ("length", "stop") for *_, f in results)
    assert process.poll() is None
    seconds = sorted(s for s, *_ in results)
    p50, p95 = statistics.median(seconds), seconds[int(0.95 * (len(seconds) - 1))]
    record_property("latency_p50_p95_s", (round(p50, 2), round(p95, 2)))
    print(f"20 concurrent streams: p50 {p50:.2f} s, p95 {p95:.2f} s")


def test_request_problems_are_named_without_a_server():
    assert request_problem("/v1/chat/completions", b"[]", 4096) == (
        "the request body must be a JSON object"
    )
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4096})
    assert request_problem("/v1/chat/completions", body.encode(), 4096) is None
    assert "4097" in request_problem(
        "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 4097}).encode(), 4096
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["serve", "--port", "70000"], "invalid port: 70000"),
        (["serve", "--port", "abc"], "invalid port: 'abc'"),
        (["demo", "--port", "0"], "invalid port: 0"),
        (["serve", "--gguf-type", "q3"], "invalid choice: 'q3'"),
        (["serve", "--version", "1999-01-01T00.00.00.000Z"], "No gguf_files version 1999"),
        (["serve", "--env", "nope"], "--env nope: no folder conf/nope"),
    ],
)
def test_serving_commands_refuse_bad_input_in_one_line(tiny_project, args, message):
    started = time.perf_counter()
    result = subprocess.run(
        ["gemma-pipeline", *args], cwd=tiny_project, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert message in result.stderr.strip().splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert time.perf_counter() - started < 30  # refused before any model loads
