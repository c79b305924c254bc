import pytest

from gemma_pipeline.evaluation.tasks import gsm8k, mmlu


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
