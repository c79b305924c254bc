"""The console script's commands: read the arguments, check them, call ``inference``."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from gemma_pipeline.inference.decoding import Decoding
from gemma_pipeline.inference.errors import UserInputError
from gemma_pipeline.inference.project import Project, gguf_file
from gemma_pipeline.inference.questions import (
    check_writable,
    multiple_choice,
    multiple_choice_row,
    read_questions,
    write_answers,
)
from gemma_pipeline.sources.schema import LETTERS


def _project(args: argparse.Namespace) -> Project:
    return Project.load(args.project, args.env)


def ask(args: argparse.Namespace) -> None:
    modes = [args.question is not None, bool(args.file), bool(args.row)]
    if sum(modes) != 1:
        raise UserInputError("give one of: a question, --file FILE, --row ROW")
    if args.out and not args.file:
        raise UserInputError("--out goes with --file")
    if args.file and not args.out:
        raise UserInputError("--file needs --out: where to write the answers")
    if args.choices and not args.question:
        raise UserInputError("--choices needs the question they answer")

    project = _project(args)
    # Everything the user gave is checked before a model loads.
    decoding = Decoding(
        max_new_tokens=args.max_new_tokens or project.params("inference").max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    question = None
    if args.choices or args.row:
        question = (
            multiple_choice(args.question, list(args.choices), args.subject)
            if args.choices
            else multiple_choice_row(args.row)
        )
        if args.model == "gguf":
            raise UserInputError(
                "options are scored by the evaluation engine, on transformers: use "
                "--model merged, adapter or base"
            )
    rows = None
    if args.file:
        rows = read_questions(args.file)
        check_writable(args.out)
    if args.question is not None and not args.question.strip():
        raise UserInputError("The prompt is empty: nothing to ask.")

    from gemma_pipeline.inference.loading import load_chat_model

    model = load_chat_model(project, args.model, args.version, gguf_type=args.gguf_type)
    try:
        if question is not None:
            _print_option_scores(model, question, project)
        elif rows is not None:
            _answer_file(model, rows, decoding, args, project)
        else:
            _stream_answer(model, args.question, decoding)
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()


def _stream_answer(model: Any, question: str, decoding: Decoding) -> None:
    from gemma_pipeline.inference.chat_models import chat_prompt_ids

    prompt_ids = chat_prompt_ids(model, question, decoding)
    started = time.perf_counter()
    first = None
    tokens = 0
    for piece in model.stream(prompt_ids, decoding):
        tokens += 1
        if first is None:
            first = time.perf_counter() - started
        sys.stdout.write(piece)
        sys.stdout.flush()
    elapsed = time.perf_counter() - started
    sys.stdout.write("\n")
    rate = (tokens - 1) / (elapsed - first) if first is not None and tokens > 1 else 0.0
    print(
        f"[{model.description} · {len(prompt_ids)} prompt tokens · {tokens} new · first after "
        f"{first or 0:.2f} s · {rate:.1f} tokens/s]",
        file=sys.stderr,
    )


def _answer_file(
    model: Any, rows: list[dict[str, Any]], decoding: Decoding, args: argparse.Namespace, project
) -> None:
    from gemma_pipeline.inference.chat_models import chat_prompt_ids

    prompts = []
    for number, row in enumerate(rows, 1):
        try:
            prompts.append(chat_prompt_ids(model, row["question"], decoding))
        except UserInputError as error:
            raise UserInputError(f"{args.file}, question {number}: {error}") from error
    batch_size = project.params("inference").batch_size
    answers = model.generate(prompts, decoding, batch_size=batch_size)
    write_answers(
        args.out,
        [
            {**row, "response": answer, "model": model.description}
            for row, answer in zip(rows, answers, strict=True)
        ],
    )
    print(f"{len(rows)} answers written to {args.out}", file=sys.stderr)


def _print_option_scores(model: Any, question: dict[str, Any], project: Project) -> None:
    scores = model.score_question(
        question, max_batch_tokens=project.params("evaluate").max_batch_tokens
    )
    probabilities = scores.letter_probabilities
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    best_norm = max(range(len(scores.per_byte)), key=scores.per_byte.__getitem__)
    width = max(len(text) for text in question["choices"])
    width = min(max(width, 6), 60)
    print(f"{'':2}{'option':<{width + 3}}  p(letter)  log p(text)/byte")
    for i, text in enumerate(question["choices"]):
        marks = " ".join(
            mark
            for mark, shown in (
                ("◀ letter", i == best),
                ("◀ text", i == best_norm),
                ("(answer)", i == question["answer"]),
            )
            if shown
        )
        shown = text if len(text) <= width else text[: width - 1] + "…"
        print(
            f"  {LETTERS[i]}. {shown:<{width}}  {probabilities[i]:9.3f}  "
            f"{scores.per_byte[i]:16.3f}  {marks}".rstrip()
        )
    mass = sum(math.exp(lp) for lp in scores.letter_logprobs)
    print(
        f"[{model.description} · p(letter) is over the offered letters, which held "
        f"{mass:.1%} of the model's next-token probability]",
        file=sys.stderr,
    )


def serve(args: argparse.Namespace) -> None:
    from gemma_pipeline.inference.server import serve as run_server

    project = _project(args)
    inference = project.params("inference")
    path = gguf_file(project, args.version, args.gguf_type or inference.gguf_type)
    host, port = args.host or inference.host, args.port or inference.port
    alias = project.params("export").name
    print(
        f"serving {path}\n  as model {alias!r} on http://{host}:{port}/v1 (OpenAI-compatible); "
        f"Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    run_server(
        path, host=host, port=port, model_alias=alias, context_length=inference.context_length
    )


def rag(args: argparse.Namespace) -> None:
    from gemma_pipeline.inference import rag as rag_lib
    from gemma_pipeline.inference.server import running_server

    project = _project(args)
    inference = project.params("inference")
    params = inference.rag
    if args.top_k is not None:
        if args.top_k < 1:
            raise UserInputError("--top-k must be at least 1")
        params = params.model_copy(update={"top_k": args.top_k})
    if not args.question.strip():
        raise UserInputError("The question is empty: nothing to ask.")
    passages = rag_lib.split_passages(rag_lib.load_documents(args.docs), params)
    retriever = rag_lib.bm25_retriever(passages, params.top_k)

    def run(base_url: str, model_name: str) -> rag_lib.RagAnswer:
        llm = rag_lib.chat_model(base_url, model_name, params.max_new_tokens, params.stop)
        return rag_lib.answer(rag_lib.build_chain(llm, retriever, params), args.question)

    if args.base_url:
        result = run(args.base_url.rstrip("/"), _served_model(args.base_url))
    else:
        path = gguf_file(project, args.version, args.gguf_type or inference.gguf_type)
        alias = project.params("export").name
        print(f"starting llama.cpp's server on {path} …", file=sys.stderr, flush=True)
        with running_server(
            path, model_alias=alias, context_length=inference.context_length
        ) as url:
            result = run(url, alias)
    print(result.answer)
    print(f"\nPassages used ({len(result.passages)} of {len(passages)}, by BM25 score):")
    for n, passage in enumerate(result.passages, 1):
        text = " ".join(passage.page_content.split())
        print(
            f"  [{n}] {passage.metadata['source']} (score {passage.metadata['score']:.2f}): "
            f"{text[:300]}{'…' if len(text) > 300 else ''}"
        )


def _served_model(base_url: str) -> str:
    """The first model the server lists: what ``model`` a request must name."""
    import urllib.request

    from gemma_pipeline.inference.server import model_ids

    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=10) as response:
            return model_ids(response.read())[0]
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise UserInputError(
            f"--base-url {base_url}: no model listed at /models ({error})"
        ) from error


def demo(args: argparse.Namespace) -> None:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from gemma_pipeline.app.page import launch
    except ImportError as error:
        raise UserInputError(
            f"demo needs the app extra: pip install -e '.[app]' ({error})"
        ) from error
    from gemma_pipeline.app.session import SideBySide

    project = _project(args)
    inference = project.params("inference")
    session = SideBySide.load(project, args.version)
    host, port = args.host or inference.host, args.port or inference.demo.port
    print(f"demo of adapter {session.adapter_version} on http://{host}:{port}", file=sys.stderr)
    launch(session, host=host, port=port)
