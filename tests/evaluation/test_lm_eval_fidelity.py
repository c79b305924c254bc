"""The project's benchmark prompts and scores against lm-evaluation-harness's, on the same rows.

The prompt test needs no model and runs in CI; the accuracy comparison runs the embedded
Gemma 3 270M through both (slow).
"""

from __future__ import annotations

import pytest

from gemma_pipeline.evaluation.benchmarks import task_docs

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.tasks import TaskManager  # noqa: E402

from gemma_pipeline.evaluation.fidelity import (  # noqa: E402
    compare_with_lm_eval,
    ingest_same_rows,
    write_benchmark_files,
)

SHOTS = {"mmlu": [0, 5], "mathqa": [0], "gsm8k": [5]}


@pytest.fixture(scope="module")
def same_rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm-eval-rows")
    setup = write_benchmark_files(folder, {"mmlu": 40, "mathqa": 20, "gsm8k": 12})
    return setup, ingest_same_rows(setup["files"])


def lm_eval_requests(configs, num_fewshot):
    """Each document's request arguments, in lm-eval's document order, task after task."""
    manager = TaskManager()
    per_doc = []
    for config in configs:
        [task] = manager.load([config])["tasks"].values()
        task.set_fewshot_seed(1234)  # what simple_evaluate does with its default seed
        if num_fewshot:
            task.set_config("num_fewshot", num_fewshot)
        task.build_all_requests()
        docs: dict[int, list] = {}
        for instance in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
            docs.setdefault(instance.doc_id, []).append(instance.arguments)
        per_doc += [docs[i] for i in sorted(docs)]
    return per_doc


@pytest.mark.parametrize(
    ("task", "num_fewshot"), [(t, k) for t, shots in SHOTS.items() for k in shots]
)
def test_plain_prompts_equal_lm_evals(same_rows, task, num_fewshot):
    setup, questions = same_rows
    theirs = lm_eval_requests(setup["configs"][task], num_fewshot)
    ours = task_docs(questions, task, num_fewshot, "plain")
    if task == "mmlu":  # lm-eval runs subject after subject
        order = list(dict.fromkeys(doc.subject for doc in ours))
        ours = sorted(ours, key=lambda doc: order.index(doc.subject))
    assert len(ours) == len(theirs)
    for doc, arguments in zip(ours, theirs, strict=True):
        if task == "gsm8k":
            [(context, generation_kwargs)] = arguments
            assert doc.request.context == context
            assert set(doc.request.until) == set(generation_kwargs["until"])
        else:
            assert [(r.context, r.continuation) for r in doc.requests] == [
                tuple(a) for a in arguments
            ]


@pytest.mark.slow
def test_embedded_model_scores_equal_lm_evals_within_half_a_point(tmp_path):
    """The embedded Gemma 3 270M through both harnesses, on the same rows, in float32."""
    from gemma_pipeline.modeling import load_causal_lm, load_tokenizer

    name, cache = "embedded:gemma3-270m", "data/06_models/embedded_gemma3_270m"
    tokenizer = load_tokenizer(name, embedded_cache_dir=cache)
    model = load_causal_lm(name, embedded_cache_dir=cache, dtype="float32").eval()
    rows = compare_with_lm_eval(model, tokenizer, tmp_path, {"mmlu": 24, "mathqa": 24, "gsm8k": 6})
    assert {(row["task"], row["shots"]) for row in rows} == {
        ("mmlu", 0),
        ("mmlu", 5),
        ("mathqa", 0),
        ("gsm8k", 5),
    }
    for row in rows:
        assert abs(row["difference_points"]) <= 0.5, row
