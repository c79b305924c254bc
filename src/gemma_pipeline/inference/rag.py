"""Retrieval-augmented answers with LangChain: local documents, a BM25 retriever, and the
fine-tune as a chat model behind an OpenAI-compatible server (``ChatOpenAI``).

Nothing is downloaded: BM25 (rank-bm25) ranks passages by the question's words, with no
embedding model. The prompt carries worked examples as earlier turns (``rag.examples``): an
instruction-tuned Gemma does not need them, but the embedded 270M demo model is a base model
and answers from the passages only when it has seen how.

Needs the ``rag`` extra: ``pip install -e '.[rag]'``. ``langchain-huggingface`` is not used: it
pins ``huggingface-hub<2`` and this project needs 2.x; the server route needs neither.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma_pipeline.config import RagParams

from .errors import UserInputError

#: Files read as documents (plain text); others in the folder are listed as skipped.
DOCUMENT_SUFFIXES = (".txt", ".md")
NO_PASSAGES = "(none)"


def _require_langchain() -> None:
    try:
        import langchain_core  # noqa: F401
        import langchain_openai  # noqa: F401
        import rank_bm25  # noqa: F401
    except ImportError as error:
        raise UserInputError(
            f"rag needs the rag extra: pip install -e '.[rag]' ({error.name} is missing)"
        ) from error


def load_documents(folder: str | Path) -> list[Any]:
    """Every .txt and .md file under ``folder`` as a LangChain Document (metadata: source)."""
    _require_langchain()
    from langchain_core.documents import Document

    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"--docs {folder}: no such folder")
    documents = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() not in DOCUMENT_SUFFIXES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UserInputError(f"{path}: cannot read it as UTF-8 text ({error})") from error
        if text.strip():
            documents.append(
                Document(page_content=text, metadata={"source": str(path.relative_to(folder))})
            )
    if not documents:
        raise UserInputError(
            f"--docs {folder}: no non-empty {' or '.join(DOCUMENT_SUFFIXES)} file in it"
        )
    return documents


def split_passages(documents: Sequence[Any], params: RagParams) -> list[Any]:
    """Passages of at most ``chunk_size`` characters, cut at paragraphs, then lines, then words."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=params.chunk_size, chunk_overlap=params.chunk_overlap
    )
    passages = splitter.split_documents(list(documents))
    for index, passage in enumerate(passages):
        passage.metadata["passage"] = index
    return passages


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def bm25_retriever(passages: Sequence[Any], top_k: int) -> Any:
    """A LangChain retriever: the ``top_k`` passages with the highest BM25 score (> 0)."""
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from rank_bm25 import BM25Okapi

    class BM25Retriever(BaseRetriever):
        passages: list[Document]
        top_k: int
        index: Any

        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            scores = self.index.get_scores(words(query))
            ranked = sorted(range(len(scores)), key=lambda i: -scores[i])[: self.top_k]
            found = []
            for i in ranked:
                if scores[i] > 0:  # no word in common: not evidence, however few passages
                    passage = self.passages[i].model_copy(deep=True)
                    passage.metadata["score"] = float(scores[i])
                    found.append(passage)
            return found

    class LuceneIdfBM25(BM25Okapi):
        """BM25 with Lucene's idf, ln(1 + (N - n + 0.5) / (n + 0.5)): never zero or negative.
        rank-bm25's Okapi idf is 0 for a word in half the passages, so a folder of two
        documents would rank nothing."""

        def _calc_idf(self, nd: dict[str, int]) -> None:
            for word, n in nd.items():
                self.idf[word] = math.log(1 + (self.corpus_size - n + 0.5) / (n + 0.5))

    index = LuceneIdfBM25([words(passage.page_content) for passage in passages])
    return BM25Retriever(passages=list(passages), top_k=top_k, index=index)


def format_passages(passages: Sequence[Any]) -> str:
    if not passages:
        return NO_PASSAGES
    return "\n".join(
        f"[{n}] {' '.join(passage.page_content.split())}" for n, passage in enumerate(passages, 1)
    )


def _user_turn(params: RagParams, passages: str, question: str) -> str:
    return f"{params.instruction}\n\nPassages:\n{passages}\n\nQuestion: {question}"


def rag_prompt(params: RagParams) -> Any:
    """The chat prompt: the worked examples as earlier turns, then passages and question."""
    from langchain_core.prompts import ChatPromptTemplate

    messages: list[tuple[str, str]] = []
    for example in params.examples:
        passages = "\n".join(f"[{n}] {text}" for n, text in enumerate(example.passages, 1))
        user = _user_turn(params, passages, example.question)
        # Literal text, not a template: braces in an example must stay braces.
        messages += [("human", _escape(user)), ("ai", _escape(example.answer))]
    messages.append(("human", _user_turn(params, "{passages}", "{question}")))
    return ChatPromptTemplate.from_messages(messages)


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def chat_model(base_url: str, model: str, max_new_tokens: int, stop: Sequence[str] = ()) -> Any:
    """The fine-tune as a LangChain chat model: ``ChatOpenAI`` on the local server, greedy."""
    _require_langchain()
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url,
        # A local llama.cpp server checks no key; the client insists on one. Not a secret.
        api_key="no-key-needed",
        model=model,
        temperature=0,
        max_tokens=max_new_tokens,
        # ChatOpenAI sends the limit as max_completion_tokens, which llama-cpp-python's server
        # ignores (it reads max_tokens): without this it writes until the context is full.
        extra_body={"max_tokens": max_new_tokens},
        stop=list(stop) or None,
        max_retries=0,
    )


@dataclass(frozen=True)
class RagAnswer:
    answer: str
    passages: list[Any]  # the retrieved Documents, best first
    prompt: list[Any]  # the chat messages the model was sent


def build_chain(llm: Any, retriever: Any | None, params: RagParams) -> Any:
    """question -> {question, passages, prompt, answer}; ``retriever=None``: no passages."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    retrieve = retriever if retriever is not None else RunnableLambda(lambda _: [])
    prompt = rag_prompt(params)
    return (
        RunnablePassthrough.assign(passages=(lambda x: x["question"]) | retrieve)
        .assign(
            prompt=lambda x: prompt.invoke(
                {"passages": format_passages(x["passages"]), "question": x["question"]}
            )
        )
        .assign(answer=(lambda x: x["prompt"]) | llm | StrOutputParser())
    )


def answer(chain: Any, question: str) -> RagAnswer:
    if not question.strip():
        raise UserInputError("The question is empty: nothing to ask.")
    result = chain.invoke({"question": question})
    return RagAnswer(
        answer=result["answer"].strip(),
        passages=result["passages"],
        prompt=result["prompt"].to_messages(),
    )
