import pandas as pd
import pytest

from gemma_pipeline.evaluation.tasks import gsm8k, mathqa, mmlu
from gemma_pipeline.sources import normalize_mathqa

#: Raw Math-QA options texts with the quirks of the real test set.
MATHQA_OPTIONS = [
    "a ) 38 , b ) 27.675 , c ) 30 , d ) data inadequate , e ) none of these",
    "['a ) 12', 'b ) 15', 'c ) 10', 'd ) 8', 'e ) 14']",  # a list written as text
    "a ) a ) 2 , b ) b ) 5 , c ) c ) 7 , d ) d ) 9 , e ) e ) 11",  # doubled labels
    "a ) 1,200 , b ) 1,500 , c ) 1,800 , d ) 2,100 , e ) 2,400",  # thousands separators
    "a ) rs . 1, 200 , b ) rs . 1, 500 , c ) rs . 2, 000 , d ) rs . 900 , e ) none",
    "a ) 1 ,b ) 2 , c ) 3 , d ) 4 , e ) 5",  # no space before a label: 4 choices
    "a ) 2, or else b ) 3 , b ) 4 , c ) 5 , d ) 6 , e ) 7",  # a label inside a text: 6
    "a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5 , \n",
    "A ) 1 , B ) 2 , C ) 3 , D ) 4 , E ) 5",  # capital labels: none
]


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", "7", "7"),
        ("The answer is $1,200.", "[invalid]", "$1,200."),
        ("#### -5 and then 12 more", "-5", "12"),
        ("no number here", "[invalid]", "[invalid]"),
    ],
)
def test_filters_read_the_number_as_lm_eval_does(text, strict, flexible):
    assert gsm8k.extract(text, "strict-match") == strict
    assert gsm8k.extract(text, "flexible-extract") == flexible


def test_exact_match_ignores_what_lm_evals_gsm8k_ignores():
    reference = "3 + 4 = <<3+4=7>>7 and 1,000 more.\n#### 1,007"
    assert gsm8k.exact_match("1007", reference)
    assert gsm8k.exact_match("$1,007.", reference)
    assert not gsm8k.exact_match("1008", reference)
    assert not gsm8k.exact_match("[invalid]", reference)


def test_every_mmlu_subject_has_one_category():
    subjects = [s for group in mmlu.CATEGORIES.values() for s in group]
    assert len(subjects) == len(set(subjects)) == 57
    assert mmlu.description("high_school_us_history").endswith("about high school us history.\n\n")


@pytest.mark.parametrize("options", MATHQA_OPTIONS)
def test_mathqa_choices_are_the_ones_lm_evals_own_task_reads(options):
    utils = pytest.importorskip("lm_eval.tasks.mathqa.utils")
    assert mathqa.lm_eval_choices(options) == utils.doc_to_choice({"options": options})


def _mathqa_test_rows(*options) -> pd.DataFrame:
    raw = pd.DataFrame(
        [{"Problem": f"problem {i} ?", "options": o, "correct": "b"} for i, o in enumerate(options)]
    )
    accepted, rejected = normalize_mathqa(raw, source="mathqa", split="test", origin="test")
    assert rejected.empty, rejected
    return accepted


def test_mathqa_plain_style_scores_lm_evals_choices_read_from_the_raw_text():
    quirky, listed = MATHQA_OPTIONS[1], ["12", "15", "10", "8", "14"]
    rows = _mathqa_test_rows(quirky, listed)
    quirk_doc, list_doc = mathqa.build(rows, rows.iloc[:0], 0, "plain")
    assert quirk_doc.choice_texts == mathqa.lm_eval_choices(quirky) != rows["choices"][0]
    # A source that gave a list has no raw text to read: the clean choices stand in.
    assert rows["raw_options"][1] is None
    assert list_doc.choice_texts == listed == rows["choices"][1]
    for doc, row in zip((quirk_doc, list_doc), rows.to_dict(orient="records"), strict=True):
        assert [r.continuation for r in doc.requests] == [f" {c}" for c in doc.choice_texts]
        assert {r.context for r in doc.requests} == {f"Question: {row['question']}\nAnswer:"}
        assert doc.gold == row["answer"]


def test_mathqa_plain_style_names_a_row_lm_evals_regex_finds_no_choice_in():
    rows = _mathqa_test_rows(MATHQA_OPTIONS[-1])
    with pytest.raises(ValueError, match=rows["row_id"][0]):
        mathqa.build(rows, rows.iloc[:0], 0, "plain")
