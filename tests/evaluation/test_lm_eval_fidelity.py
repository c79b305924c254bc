"""The project's benchmark prompts and scores against lm-evaluation-harness's, on the same rows.

The prompt test needs no model and runs in CI; the accuracy comparison runs the embedded
Gemma 3 270M through both (slow).
"""

from __future__ import annotations

import json

import pytest

from gemma_pipeline.evaluation.benchmarks import task_docs

lm_eval = pytest.importorskip("lm_eval")

from gemma_pipeline.evaluation.fidelity import (  # noqa: E402
    compare_with_lm_eval,
    ingest_same_rows,
    write_benchmark_files,
)
from gemma_pipeline.evaluation.lm_eval_bridge import _task_manager, task_config  # noqa: E402

SHOTS = {"mmlu": [0, 5], "mathqa": [0], "gsm8k": [5]}


@pytest.fixture(scope="module")
def same_rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm-eval-rows")
    setup = write_benchmark_files(folder, {"mmlu": 40, "mathqa": 20, "gsm8k": 12})
    return setup, ingest_same_rows(setup["files"])


def lm_eval_tasks(configs, num_fewshot):
    """lm-eval's own tasks from their registered configs, requests built."""
    manager = _task_manager()  # the one evaluate runs lm-eval with; indexing it takes seconds
    tasks = []
    for config in configs:
        [task] = manager.load([config])["tasks"].values()
        task.set_fewshot_seed(1234)  # what simple_evaluate does with its default seed
        if num_fewshot:
            task.set_config("num_fewshot", num_fewshot)
        task.build_all_requests()
        tasks.append(task)
    return tasks


def lm_eval_requests(configs, num_fewshot):
    return requests_per_doc(lm_eval_tasks(configs, num_fewshot))


def requests_per_doc(tasks):
    """Each document's request arguments, in lm-eval's document order, task after task."""
    per_doc = []
    for task in tasks:
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


#: Options texts of the kinds lm-eval's regex reads as the project's clean parse does...
MATHQA_AGREEING = {
    "normal": "a ) 38 , b ) 27.675 , c ) 30 , d ) data inadequate , e ) none of these",
    "thousands separators": "a ) 1,200 , b ) 1,500 , c ) 1,800 , d ) 2,100 , e ) 2,400",
}
#: ...and of the real test set's quirks, where lm-eval reads other choices than the clean parse.
MATHQA_QUIRKS = {
    "list written as text": "['a ) 12', 'b ) 15', 'c ) 10', 'd ) 8', 'e ) 14']",
    "doubled labels": "a ) a ) 2 , b ) b ) 5 , c ) c ) 7 , d ) d ) 9 , e ) e ) 11",
    "comma and space inside a number": (
        "a ) rs . 1, 200 , b ) rs . 1, 500 , c ) rs . 2, 000 , d ) rs . 900 , e ) none"
    ),
    "4 choices: no space before a label": "a ) 1 ,b ) 2 , c ) 3 , d ) 4 , e ) 5",
    "6 choices: a label inside an option": "a ) 2, or else b ) 3 , b ) 4 , c ) 5 , d ) 6 , e ) 7",
}


def test_mathqa_plain_requests_equal_lm_evals_on_the_real_rows_quirks(tmp_path):
    options = [*MATHQA_AGREEING.values(), *MATHQA_QUIRKS.values()]
    rows = [
        {  # regisss/math_qa's (allenai/math_qa's) schema, what lm-eval's mathqa task reads
            "Problem": f"a train covers {10 * (i + 1)} km in 2 hours . what is its speed ?",
            "Rationale": f'"explanation : speed = {10 * (i + 1)} / 2 . answer : {correct}"',
            "options": text,
            "correct": correct,
            "annotated_formula": "divide(n0,n1)",
            "linear_formula": "divide(n0,n1)|",
            "category": "physics",
        }
        # Every letter is gold somewhere; e on the 4-choice row lies past lm-eval's choices.
        for i, (text, correct) in enumerate(zip(options, "abcdeea", strict=True))
    ]
    path = tmp_path / "mathqa_test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    questions = ingest_same_rows({"mathqa": {"test": str(path)}})
    [task] = lm_eval_tasks([task_config("mathqa", {"test": str(path)})], 0)
    theirs = requests_per_doc([task])
    ours = task_docs(questions, "mathqa", 0, "plain")
    assert len(ours) == len(theirs) == len(task.eval_docs) == len(rows)
    for doc, arguments, their_doc in zip(ours, theirs, task.eval_docs, strict=True):
        assert [(r.context, r.continuation) for r in doc.requests] == [tuple(a) for a in arguments]
        assert doc.gold == task.doc_to_target(their_doc)
    # The quirk rows are ones where the clean parse would have scored other choices.
    clean = questions["choices"].tolist()
    assert [doc.choice_texts != choices for doc, choices in zip(ours, clean, strict=True)] == [
        text in MATHQA_QUIRKS.values() for text in options
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
