"""The held-out sections: results rows, letter spread, per-subject rows and the plain-sentence
reading of each task, on a small hand-written ``heldout_metrics``."""

from __future__ import annotations

from gemma_pipeline.reporting.blocks import render_markdown_blocks
from gemma_pipeline.reporting.heldout import (
    heldout_blocks,
    letter_spread_rows,
    per_subject_rows,
    results_table_rows,
    task_summary,
)


def test_results_table_rows_format_and_mark_each_metric(heldout_metrics):
    rows = {(row["dataset"], row["metric"]): row for row in results_table_rows(heldout_metrics)}
    # Unknown top-level keys (lm_eval) are not tasks.
    assert {dataset for dataset, _ in rows} == {"mmlu", "mathqa"}
    acc = rows["mmlu", "letter_acc"]
    assert (acc["base"], acc["finetuned"], acc["change"]) == (
        "25.0 ± 4.4",
        "50.0 ± 5.0",
        "+25.0 ± 6.0",
    )
    assert acc["significant"]
    assert not rows["mmlu", "option_acc"]["significant"]
    assert rows["mmlu", "option_acc_norm"]["finetuned"] == "—"
    assert rows["mmlu", "option_acc_norm"]["change"] == "—"
    assert rows["mmlu", "completion_perplexity"]["base"] == "12.3 ± 0.5"
    # One question: no SE, so a +100-point change is still not marked.
    assert rows["mathqa", "letter_acc"]["change"] == "+100.0"
    assert not rows["mathqa", "letter_acc"]["significant"]
    strict = {
        (row["dataset"], row["metric"]): row for row in results_table_rows(heldout_metrics, 5.0)
    }
    assert strict["mmlu", "letter_acc"]["significant"] is False


def test_letter_spread_and_per_subject_rows(heldout_metrics):
    letters, spread = letter_spread_rows(heldout_metrics)
    assert letters == ["A", "B", "C", "D", "E"]
    base_mmlu = next(r for r in spread if r["dataset"] == "mmlu" and r["model"] == "base")
    assert base_mmlu["shares"]["A"] == "90.0" and base_mmlu["max_share"] == "90.0"
    subjects = per_subject_rows(heldout_metrics)
    geography = next(r for r in subjects if r["subject"] == "geography")
    assert geography["change"] == "+35.0 ± 8.0" and geography["significant"]


def test_task_summary_weighs_the_gain_and_the_letter_spread(heldout_metrics):
    mmlu, mathqa = heldout_metrics["tasks"]["mmlu"], heldout_metrics["tasks"]["mathqa"]
    text = task_summary("mmlu", mmlu)
    assert "25.0% → 50.0%" in text
    assert "+25.0 points" in text and "larger than 2 SE (12.0 points)" in text
    assert "base model 90.0% on A" in text and "fine-tuned model 40.0% on B" in text
    # The base model's collapse onto A is called out; the fine-tuned one is not collapsed.
    assert "The base model puts at least 50.0%" in text
    quiet = task_summary("mmlu", mmlu, significance_se=5.0, collapse_share=0.95)
    assert "within 5 SE" in quiet and "at least" not in quiet
    assert "no standard error" in task_summary("mathqa", mathqa)


def test_heldout_sections_in_markdown(heldout_metrics):
    md = render_markdown_blocks(
        heldout_blocks(heldout_metrics, significance_se=2.0, collapse_share=0.5)
    )
    assert "| dataset | metric | base | fine-tuned | change ± SE |" in md
    assert "| mmlu | `letter_acc` | 25.0 ± 4.4 | 50.0 ± 5.0 | **+25.0 ± 6.0** |" in md
    # A pipe in a subject name must not split the table row.
    assert "\\<script\\>alert(1)\\</script\\> \\| law" in md
    for text in (
        "## Reading the results",
        "## Predicted-letter shares",
        "catalog dataset `per_subject_plot`",
    ):
        assert text in md, text
