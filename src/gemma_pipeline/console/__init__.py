"""``gemma-pipeline``: ask the fine-tune, serve it, answer from documents with it.

(Not ``cli``: Kedro loads ``<package>.cli`` as the project's own ``kedro`` commands.)

A user error (a missing artifact or version, an unreadable file, an empty or too-long prompt)
prints one line and exits 1; a bad command line prints the usage and exits 2. Tracebacks are
for bugs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from gemma_pipeline.inference.errors import UserInputError

from . import commands

EXIT_USER_ERROR = 1


def _port(text: str) -> int:
    """A TCP port, refused at the command line rather than after the model has loaded."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port: {port} (1-65535)")
    return port


def _add_project_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project", default=None, help="the Kedro project's folder (default: the current one)"
    )
    parser.add_argument(
        "--env",
        default=None,
        help="configuration environment, as for `kedro run --env` (default: $KEDRO_ENV, "
        "else local); `demo` is the offline embedded model",
    )


def _add_model_options(parser: argparse.ArgumentParser, kinds: Sequence[str]) -> None:
    parser.add_argument(
        "--model",
        choices=kinds,
        default=kinds[0],
        help=f"which model (default: {kinds[0]}); base: the base model as trained on; "
        "adapter: base + the run's LoRA adapter, unmerged",
    )
    parser.add_argument(
        "--version",
        default=None,
        help="the run's artifact version (a timestamp such as 2026-12-03T13.40.12.546Z; "
        "default: the latest)",
    )
    parser.add_argument(
        "--gguf-type",
        choices=("f16", "q8_0", "q4_k_m"),
        default=None,
        help="which exported GGUF (default: inference.gguf_type, q8_0)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-pipeline",
        description="Use the fine-tune: ask it, serve it, answer from documents with it. "
        "Run from the project folder; models come from the runs' versioned artifacts.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = sub.add_parser(
        "ask",
        help="ask a question; or a file of them; or score a question's options",
        description="Ask the model a question through Gemma's chat template, exactly as "
        "training formatted its prompts. The answer streams as it is generated (greedy "
        "unless --temperature is above 0). With --choices or --row, print each option's "
        "probability, scored as `evaluate` scores held-out questions.",
    )
    ask.add_argument("question", nargs="?", help="the question (or use --file / --row)")
    _add_model_options(ask, ("merged", "adapter", "base", "gguf"))
    ask.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: inference.max_new_tokens"
    )
    ask.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    ask.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling, with a temperature"
    )
    ask.add_argument(
        "--seed", type=int, default=None, help="sampling seed, for a repeatable sample"
    )
    ask.add_argument("--file", help='a JSONL file of questions: one {"question": ...} per line')
    ask.add_argument("--out", help="with --file: where to write the answers (JSONL, a new file)")
    ask.add_argument(
        "--choices", nargs="+", metavar="OPTION", help="the options of a multiple-choice question"
    )
    ask.add_argument("--subject", default="", help="with --choices: the MMLU subject")
    ask.add_argument(
        "--row",
        help="an MMLU-style row, as JSON text or a .json file: "
        '{"question": ..., "choices": [...], "subject": ..., "answer": 1}',
    )
    _add_project_options(ask)
    ask.set_defaults(run=commands.ask)

    serve = sub.add_parser(
        "serve",
        help="serve the exported GGUF with llama.cpp's OpenAI-compatible server",
        description="Start llama.cpp's OpenAI-compatible server (llama-cpp-python's) on the "
        "run's exported GGUF, with the chat template it carries (Gemma's) and its stop "
        "tokens. Stop it with Ctrl-C. On a GPU, serve with vLLM instead: docs/serving.md.",
    )
    _add_model_options(serve, ("gguf",))
    serve.add_argument("--host", default=None, help="default: inference.host (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=None, help="default: inference.port (8000)")
    _add_project_options(serve)
    serve.set_defaults(run=commands.serve)

    rag = sub.add_parser(
        "rag",
        help="answer a question from a folder of documents (LangChain, BM25)",
        description="Retrieve the passages of --docs that best match the question (BM25, "
        "offline), put them in the prompt and ask the fine-tune through LangChain's "
        "ChatOpenAI on an OpenAI-compatible server: --base-url, or else llama.cpp's, "
        "started on the run's GGUF for this one question. Needs the rag extra.",
    )
    rag.add_argument("question")
    rag.add_argument("--docs", required=True, help="folder of .txt / .md documents")
    rag.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="passages in the prompt (default: inference.rag.top_k)",
    )
    rag.add_argument(
        "--base-url",
        default=None,
        help="a running OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
        "(gemma-pipeline serve, or vLLM)",
    )
    _add_model_options(rag, ("gguf",))
    _add_project_options(rag)
    rag.set_defaults(run=commands.rag)

    demo = sub.add_parser(
        "demo",
        help="a web page: base and fine-tuned side by side, held-out questions, results",
        description="Start the web demo on 127.0.0.1 (inference.host): ask both models a "
        "question and watch the answers stream side by side; sample a held-out question of "
        "the run's evaluation split and see each option's probability under both models; "
        "see the run's base vs fine-tuned results. Needs the app extra; Ctrl-C stops it.",
    )
    demo.add_argument(
        "--version",
        default=None,
        help="the adapter's version (default: the latest); its newest evaluation is shown",
    )
    demo.add_argument("--host", default=None, help="default: inference.host (127.0.0.1)")
    demo.add_argument(
        "--port", type=_port, default=None, help="default: inference.demo.port (7860)"
    )
    _add_project_options(demo)
    demo.set_defaults(run=commands.demo)
    return parser


def _quiet_libraries() -> None:
    """The terminal shows the answer: not the libraries' notices about themselves."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns on import that its optional CPU kernels package is absent.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="register_new_resolver", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside libraries
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # "Loading weights": seconds, not minutes


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        args.run(args)
    except UserInputError as error:
        print(f"gemma-pipeline {args.command}: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0
