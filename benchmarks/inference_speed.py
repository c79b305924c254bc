"""Issue 11: time to first token and tokens/s of the fine-tune, per way of running it.

On the same chat prompts, greedy, a fixed number of new tokens (the demo fine-tune never ends
its turn early, so every answer is exactly ``--new-tokens`` long):

- ``ask`` through transformers: the merged folder in bf16 (``TransformersChatModel.stream``);
- ``ask --model gguf`` in process: llama.cpp on the q8_0 and f16 files, no HTTP;
- ``serve``: llama.cpp's OpenAI-compatible server on the q8_0 and f16 files, called with the
  ``openai`` client, streaming; the first content chunk is the first token.

Time to first token is the prompt's prefill plus one decode step; tokens/s is the decode rate
after the first token, ``(n - 1) / (t_last - t_first)``. Each way is warmed up on one prompt
first; the figures are medians over the prompts.

    python benchmarks/inference_speed.py --env demo --out benchmarks/results/inference_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from openai import OpenAI

from gemma_pipeline.inference.chat_models import LlamaCppChatModel
from gemma_pipeline.inference.decoding import Decoding
from gemma_pipeline.inference.loading import load_chat_model
from gemma_pipeline.inference.project import Project, gguf_file
from gemma_pipeline.inference.server import running_server

PROMPTS = [
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "The following is a multiple choice question about astronomy.\n\nWhich planet is known as "
    "the Red Planet?\nA. Venus\nB. Mars\nC. Jupiter\nD. Saturn\nAnswer with the letter of the "
    "correct option.",
    "Summarize the plot of a story in which a lighthouse keeper finds a message in a bottle, "
    "decides to answer it, and over many years exchanges letters with a stranger across the "
    "sea, only to learn at the end that the stranger lives in the next village.",
]


def timed(pieces) -> tuple[float, float, int]:
    """(seconds to the first piece, decode tokens/s after it, pieces) of a token stream."""
    started = time.perf_counter()
    first = last = None
    count = 0
    for _ in pieces:
        now = time.perf_counter()
        first = first if first is not None else now
        last, count = now, count + 1
    return first - started, (count - 1) / (last - first) if count > 1 else 0.0, count


def chat_stream(model, decoding: Decoding):
    return lambda prompt: model.stream(model.encode(model.render(prompt)), decoding)


def served_stream(client, new_tokens: int):
    def stream(prompt: str):
        chunks = client.chat.completions.create(
            model="bench",
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=new_tokens,
            stream=True,
        )
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return stream


def measure(name: str, stream_one, prompts: list[str]) -> dict:
    stream_one(prompts[0])  # warm-up: first-call allocations, caches
    runs = [timed(stream_one(prompt)) for prompt in prompts]
    row = {
        "way": name,
        "ttft_s": statistics.median(r[0] for r in runs),
        "tokens_per_s": statistics.median(r[1] for r in runs),
        "new_tokens": [r[2] for r in runs],
    }
    print(
        f"| {name} | {row['ttft_s'] * 1000:.0f} ms | {row['tokens_per_s']:.1f} | "
        f"{row['new_tokens']} |",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="demo")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    project = Project.load(env=args.env)
    decoding = Decoding(max_new_tokens=args.new_tokens)
    context = project.params("inference").context_length
    rows = []
    print("| way | time to first token | tokens/s | new tokens |\n|---|---|---|---|")

    merged = load_chat_model(project, "merged")
    dtype = str(merged.model.dtype).removeprefix("torch.")
    rows.append(measure(f"ask, transformers {dtype}", chat_stream(merged, decoding), PROMPTS))
    del merged  # its memory, before llama.cpp loads

    for kind in ("q8_0", "f16"):
        path = gguf_file(project, None, kind)
        local = LlamaCppChatModel(str(path), context_length=context)
        name = f"ask --model gguf, llama.cpp {kind}"
        rows.append(measure(name, chat_stream(local, decoding), PROMPTS))
        local.llm.close()
        with running_server(path, model_alias="bench", context_length=context) as url:
            client = OpenAI(base_url=url, api_key="unused")
            name = f"serve, llama.cpp {kind} (HTTP, openai client)"
            rows.append(measure(name, served_stream(client, args.new_tokens), PROMPTS))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                },
                "new_tokens": args.new_tokens,
                "prompts": PROMPTS,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
