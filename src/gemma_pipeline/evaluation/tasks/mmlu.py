"""MMLU as lm-evaluation-harness's ``mmlu`` task (default variant) defines it.

Prompt: "The following are multiple choice questions (with answers) about {subject}.\\n\\n",
then k examples from the subject's dev split (the first k, in order), each written
"{question}\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer: {letter}" and separated by blank lines,
then the question ending in "Answer:". Scored by log-likelihood of " A" .. " D".
"""

from __future__ import annotations

import pandas as pd

from gemma_pipeline.evaluation.engine import LoglikelihoodRequest
from gemma_pipeline.prompting import ChatFormat
from gemma_pipeline.sources.schema import LETTERS

from .base import MultipleChoiceDoc, PromptStyle, records, require_chat

#: lm-eval's grouping of the 57 subjects (its mmlu_<category> groups).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics",
        "high_school_biology", "high_school_chemistry", "high_school_computer_science",
        "high_school_mathematics", "high_school_physics", "high_school_statistics",
        "machine_learning",
    ),
    "other": (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts",
        "human_aging", "management", "marketing", "medical_genetics", "miscellaneous",
        "nutrition", "professional_accounting", "professional_medicine", "virology",
    ),
    "social_sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions",
    ),
}  # fmt: skip
CATEGORY_OF: dict[str, str] = {s: c for c, subjects in CATEGORIES.items() for s in subjects}


def description(subject: str) -> str:
    return (
        "The following are multiple choice questions (with answers) about "
        f"{' '.join(subject.split('_'))}.\n\n"
    )


def doc_to_text(doc: dict) -> str:
    options = "".join(f"\n{LETTERS[i]}. {choice}" for i, choice in enumerate(doc["choices"]))
    return f"{doc['question'].strip()}{options}\nAnswer:"


def build(
    test: pd.DataFrame,
    fewshot: pd.DataFrame,
    num_fewshot: int,
    style: PromptStyle,
    chat: ChatFormat | None = None,
) -> list[MultipleChoiceDoc]:
    """One document per test row; its few-shot block is shared by the subject's rows."""
    pools = {subject: records(rows) for subject, rows in fewshot.groupby("subject", sort=False)}
    docs = []
    for doc in records(test):
        examples = pools.get(doc["subject"], [])[:num_fewshot]
        if len(examples) < num_fewshot:
            raise ValueError(
                f"mmlu: {num_fewshot}-shot needs {num_fewshot} few-shot rows of subject "
                f"{doc['subject']!r}, the fewshot split has {len(examples)}"
            )
        letters = LETTERS[: len(doc["choices"])]
        if style == "plain":
            prefix = description(doc["subject"]) + "".join(
                f"{doc_to_text(ex)} {LETTERS[ex['answer']]}\n\n" for ex in examples
            )
            requests = [
                LoglikelihoodRequest(prefix + doc_to_text(doc), f" {x}", prefix) for x in letters
            ]
        else:
            # The training prompt, token for token, after the few-shot turns; the letter is
            # the model turn's first token, as in training.
            chat = require_chat(chat, "mmlu")
            turns = [(chat.user_message(ex), chat.answer(ex)) for ex in examples]
            context, prefix = chat.render(turns, chat.user_message(doc)), chat.render_turns(turns)
            requests = [
                LoglikelihoodRequest(context, x, prefix, intact_context=True) for x in letters
            ]
        docs.append(
            MultipleChoiceDoc(
                row_id=doc["row_id"],
                subject=doc["subject"],
                requests=requests,
                choice_texts=list(letters),
                gold=int(doc["answer"]),
            )
        )
    return docs
