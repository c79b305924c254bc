"""Retrieval-augmented answers: documents, BM25, the prompt, and a model that uses the passage."""

from __future__ import annotations

import pytest

from gemma_pipeline.config import RagParams
from gemma_pipeline.console import EXIT_USER_ERROR, main
from gemma_pipeline.inference import rag
from gemma_pipeline.inference.errors import UserInputError

PARAMS = RagParams(
    chunk_size=100,
    chunk_overlap=10,
    top_k=2,
    max_new_tokens=24,
    instruction="Answer from the passages.",
    examples=[{"passages": ["A {braced} fact."], "question": "Which fact?", "answer": "{braced}"}],
)
# Made up: no model can know these.
FACT = "The Velmora Institute keeps its archive key in locker 4417, on the third floor."
DOCUMENTS = {
    "institute.md": f"# Velmora Institute\n\nIt was founded by Ilse Marrow in 1931.\n\n{FACT}\n",
    "cafe/menu.txt": "The cafe serves tea at four o'clock. Scones come with jam.\n",
    "notes/ignored.pdf": "not text",
}
QUESTION = "Which locker holds the Velmora Institute's archive key?"


@pytest.fixture
def docs(tmp_path):
    for name, text in DOCUMENTS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_documents_are_the_text_files_named_by_their_path(docs):
    documents = rag.load_documents(docs)
    assert sorted(d.metadata["source"] for d in documents) == ["cafe/menu.txt", "institute.md"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "nowhere", "no such folder"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no non-empty .txt or .md file"),
        (lambda d: (d / "bad.txt").write_bytes(b"\xff\xfe\x00bad") and d, "bad.txt: cannot read"),
    ],
)
def test_unusable_document_folders_are_named(tmp_path, setup, message):
    with pytest.raises(UserInputError, match=message):
        rag.load_documents(setup(tmp_path))


def test_bm25_puts_the_passage_with_the_fact_first(docs):
    passages = rag.split_passages(rag.load_documents(docs), PARAMS)
    assert len(passages) >= 3  # split at paragraphs: the fact is a passage of its own
    found = rag.bm25_retriever(passages, top_k=2).invoke(QUESTION)
    assert found[0].page_content == FACT
    assert found[0].metadata["source"] == "institute.md"
    assert found[0].metadata["score"] > found[-1].metadata["score"] > 0
    assert rag.bm25_retriever(passages, top_k=2).invoke("zzz qqq") == []


def test_the_prompt_holds_the_examples_as_turns_then_passages_and_question(docs):
    passages = rag.split_passages(rag.load_documents(docs), PARAMS)[:1]
    messages = (
        rag.rag_prompt(PARAMS)
        .invoke({"passages": rag.format_passages(passages), "question": "Why?"})
        .to_messages()
    )
    assert [m.type for m in messages] == ["human", "ai", "human"]
    assert messages[0].content == (
        "Answer from the passages.\n\nPassages:\n[1] A {braced} fact.\n\nQuestion: Which fact?"
    )
    assert messages[1].content == "{braced}"
    assert messages[2].content.endswith(f"[1] {passages[0].page_content}\n\nQuestion: Why?")


def test_rag_through_the_served_gguf_puts_the_passage_in_the_prompt(tiny_project, docs, capsys):
    """`gemma-pipeline rag` starts llama.cpp's server on the run's GGUF and stops it after."""
    code = main(["rag", "--project", str(tiny_project), "--docs", str(docs), QUESTION])
    out, err = capsys.readouterr()
    assert code == 0, err
    answer, _, used = out.partition("\nPassages used (")
    assert answer.strip()  # a tiny random model's words, but words through the whole chain
    assert used.startswith("2 of ")
    assert "[1] institute.md (score " in used and FACT in used


def test_rag_errors_are_one_line(tiny_project, tmp_path, capsys):
    code = main(["rag", "--project", str(tiny_project), "--docs", str(tmp_path / "x"), "q"])
    assert code == EXIT_USER_ERROR
    assert (
        capsys.readouterr().err.strip()
        == f"gemma-pipeline rag: --docs {tmp_path / 'x'}: no such folder"
    )


@pytest.mark.e2e
def test_the_embedded_model_answers_from_the_passage_and_not_without_it(embedded_project, docs):
    """The embedded 270M (a base model, served from a q8_0 GGUF) with the project's RAG
    prompt: with retrieval the answer carries the made-up fact; without it, it cannot."""
    from gemma_pipeline.inference.project import Project, gguf_file
    from gemma_pipeline.inference.server import running_server

    project = Project.load(embedded_project)
    params = project.params("inference").rag
    passages = rag.split_passages(rag.load_documents(docs), params)
    retriever = rag.bm25_retriever(passages, params.top_k)
    path = gguf_file(project, None, "q8_0")
    with running_server(path, model_alias="base", context_length=2048) as url:
        llm = rag.chat_model(url, "base", params.max_new_tokens, params.stop)
        questions = [
            (QUESTION, "4417"),
            ("Who founded the Velmora Institute?", "Ilse Marrow"),
        ]
        for question, fact in questions:
            with_passages = rag.answer(rag.build_chain(llm, retriever, params), question)
            without = rag.answer(rag.build_chain(llm, None, params), question)
            sent = with_passages.prompt[-1].content
            assert fact in sent and fact not in without.prompt[-1].content
            assert fact in with_passages.answer
            assert fact not in without.answer
            # An answer, not the passages parroted back.
            assert len(with_passages.answer) < len(FACT)
