"""llama.cpp's OpenAI-compatible server (llama-cpp-python's) on a GGUF file.

The server is llama.cpp's, not one written here; this module only sets it up the way the rest
of the project prompts and decodes:

- the chat template the GGUF carries (the fine-tune's, Gemma's), so the server renders and
  tokenizes a conversation exactly as ``ask`` does; a GGUF without one gets llama-cpp-python's
  ``gemma`` format;
- generation stops at the GGUF's end-of-generation tokens (``<eos>``, ``<end_of_turn>``);
- temperature 0 means greedy: llama-cpp-python's server alone defaults ``repeat_penalty`` to
  1.1 (llama.cpp's own server, vLLM and OpenAI default to no penalty), which would make its
  "greedy" answers differ from ``ask``'s. A request can still ask for a penalty.

``running_server`` starts it in a child process on a free local port for the length of a
``with`` block (``rag`` uses it when no server URL is given).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserInputError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


def has_chat_template(gguf_path: str | Path) -> bool:
    # llama.cpp reads the metadata in a second; gguf's Python reader takes 20 s on 262k tokens.
    from llama_cpp import Llama

    vocab = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    try:
        return "tokenizer.chat_template" in vocab.metadata
    finally:
        vocab.close()


def _no_default_repeat_penalty() -> None:
    from llama_cpp.server import types

    for request in (types.CreateCompletionRequest, types.CreateChatCompletionRequest):
        request.model_fields["repeat_penalty"].default = 1.0
        request.model_rebuild(force=True)


def create_app(
    gguf_path: str | Path,
    *,
    model_alias: str,
    context_length: int,
    n_threads: int | None = None,
) -> Any:
    """The FastAPI app of llama-cpp-python's server, serving ``gguf_path`` as ``model_alias``."""
    try:
        from llama_cpp.server.app import create_app as llama_create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as error:
        raise UserInputError(
            f"serve needs llama.cpp's server: pip install -e '.[llama-cpp]' ({error})"
        ) from error
    if not Path(gguf_path).is_file():
        raise UserInputError(f"No GGUF file at {gguf_path}")
    _no_default_repeat_penalty()
    model = ModelSettings(
        model=str(gguf_path),
        model_alias=model_alias,
        n_ctx=context_length,
        n_threads=n_threads or os.cpu_count() or 1,
        chat_format=None if has_chat_template(gguf_path) else "gemma",
        verbose=False,
    )
    # llama-cpp-python's default cuts a streaming answer off whenever another request
    # arrives (interrupt_requests): with 20 concurrent streams, 19 ended with no text and no
    # finish reason. Requests queue for the one model instead.
    settings = ServerSettings(interrupt_requests=False)
    app = llama_create_app(server_settings=settings, model_settings=[model])
    return RequestChecks(app, context_length)


#: The endpoints whose bodies are checked before llama-cpp-python reads them.
CHECKED_PATHS = ("/v1/chat/completions", "/v1/completions")


def request_problem(path: str, body: bytes, context_length: int) -> str | None:
    """What is wrong with a request body, in a sentence; None when llama.cpp may have it.

    llama-cpp-python answers a malformed or non-UTF-8 body, or no messages, with a 500, an
    empty prompt with a completion of nothing, and a ``max_tokens`` above the context by
    generating until the context is full. These are the client's mistakes: 400s.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"the request body is not valid UTF-8 (byte {error.start})"
    try:
        request = json.loads(text)
    except json.JSONDecodeError as error:
        return f"the request body is not valid JSON: {error}"
    if not isinstance(request, dict):
        return "the request body must be a JSON object"
    if path.endswith("/chat/completions"):
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list"
        contents = [m.get("content") if isinstance(m, dict) else None for m in messages]
        if not any(isinstance(c, str | list) and c for c in contents):
            return "the prompt is empty: every message's 'content' is empty"
    else:
        prompt = request.get("prompt")
        if not prompt:
            return "'prompt' is empty"
    max_tokens = request.get("max_tokens")
    counted = isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
    if counted and max_tokens > context_length:
        return f"'max_tokens' {max_tokens} is above the context length {context_length}"
    return None


class RequestChecks:
    """ASGI middleware: ``request_problem`` bodies get a 400 in OpenAI's error format."""

    def __init__(self, app: Any, context_length: int) -> None:
        self.app = app
        self.context_length = context_length

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or (scope["path"] not in CHECKED_PATHS)
        ):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = request_problem(scope["path"], body, self.context_length)
        if problem is None:
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        error = {"message": problem, "type": "invalid_request_error", "param": None, "code": None}
        payload = json.dumps({"error": error}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def serve(
    gguf_path: str | Path,
    *,
    host: str,
    port: int,
    model_alias: str,
    context_length: int,
    n_threads: int | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    app = create_app(
        gguf_path, model_alias=model_alias, context_length=context_length, n_threads=n_threads
    )
    logger.info("serving %s as %r on http://%s:%d/v1", gguf_path, model_alias, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for_http(process: subprocess.Popen, url: str, *, timeout_s: float = 120.0) -> bytes:
    """Poll ``GET url`` until it answers; its body. Raises if ``process`` (the server) exits
    first or nothing answers within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"the server exited ({process.returncode}): {error[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.25)
    raise RuntimeError(f"nothing answered at {url} within {timeout_s:.0f} s")


def model_ids(models_response: bytes) -> list[str]:
    """The model ids of an OpenAI-compatible ``GET /v1/models`` answer."""
    return [model["id"] for model in json.loads(models_response)["data"]]


def wait_until_ready(
    process: subprocess.Popen, base_url: str, *, timeout_s: float = 120.0
) -> list[str]:
    """Wait until the server at ``base_url`` (``.../v1``) lists its models; their ids."""
    return model_ids(wait_for_http(process, f"{base_url}/models", timeout_s=timeout_s))


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_server(
    gguf_path: str | Path, *, model_alias: str, context_length: int
) -> Iterator[str]:
    """A server on a free 127.0.0.1 port for the ``with`` block; yields its ``/v1`` URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        __name__,
        str(gguf_path),
        "--port",
        str(port),
        "--model-alias",
        model_alias,
        "--context-length",
        str(context_length),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base_url = f"http://{DEFAULT_HOST}:{port}/v1"
    try:
        wait_until_ready(process, base_url)
        yield base_url
    finally:
        stop(process)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-alias", required=True)
    parser.add_argument("--context-length", type=int, required=True)
    args = parser.parse_args(argv)
    serve(
        args.gguf,
        host=args.host,
        port=args.port,
        model_alias=args.model_alias,
        context_length=args.context_length,
    )


if __name__ == "__main__":
    main()
