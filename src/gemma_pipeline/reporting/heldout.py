"""The held-out diagnostics: base vs fine-tuned per task and metric, what each change means
against its noise, how the models spread their answers over the letters, and accuracy per subject.

Reads ``heldout_metrics`` (``evaluation.heldout``'s paired comparison of the two models). Kept apart
from the benchmarks, whose records have another layout and only unpaired standard errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gemma_pipeline.reporting.blocks import (
    Block,
    Bullets,
    FigureRef,
    Heading,
    Paragraph,
    Styled,
    Table,
    strong_if,
)
from gemma_pipeline.reporting.formatting import (
    MISSING,
    format_estimate,
    format_number,
    is_number,
    is_significant,
)

#: Metrics that are shares of questions: shown in percent, their changes in points.
PERCENT_METRICS = frozenset({"letter_acc", "option_acc", "option_acc_norm", "letter_prob_mass"})

METRIC_NOTES = {
    "letter_acc": "the correct letter is the most likely of the offered letters",
    "option_acc": "the correct option's text is the most likely completion",
    "option_acc_norm": "as option_acc, with log-likelihood per byte (long options not penalized)",
    "letter_prob_mass": "probability the model puts on the offered letters at all",
    "completion_perplexity": "perplexity of the reference answer (lower is better)",
    "predicted_letter_entropy": "spread of predicted letters: 1 = all letters equally, 0 = one",
}


def _tasks(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    # Only per-task results; other top-level keys (a later `lm_eval` block) are not ours.
    tasks = metrics.get("tasks")
    if not isinstance(tasks, Mapping):
        return []
    return [(name, result) for name, result in sorted(tasks.items()) if isinstance(result, Mapping)]


def results_table_rows(
    metrics: Mapping[str, Any], significance_se: float = 2.0
) -> list[dict[str, Any]]:
    """One row per task and metric: formatted base, fine-tuned and change ± SE.

    Each row has ``dataset``, ``metric``, ``base``, ``finetuned``, ``change`` (strings) and
    ``significant`` (bool, ``|change| > significance_se · change_se``).
    """
    rows = []
    for task, result in _tasks(metrics):
        for metric in result.get("metrics") or []:
            name = str(metric.get("metric"))
            percent = name in PERCENT_METRICS
            rows.append(
                {
                    "dataset": task,
                    "metric": name,
                    **_comparison_cells(metric, significance_se, percent=percent),
                }
            )
    return rows


def _comparison_cells(
    entry: Mapping[str, Any], significance_se: float, *, percent: bool
) -> dict[str, Any]:
    """Base, fine-tuned and change cells of one results row (a metric or a subject)."""
    return {
        "base": format_estimate(entry.get("base"), entry.get("base_se"), percent=percent),
        "finetuned": format_estimate(
            entry.get("finetuned"), entry.get("finetuned_se"), percent=percent
        ),
        "change": format_estimate(
            entry.get("change"), entry.get("change_se"), percent=percent, signed=True
        ),
        "significant": is_significant(entry.get("change"), entry.get("change_se"), significance_se),
    }


def letter_spread_rows(metrics: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The letters seen in any task, and per task and model the share of answers per letter."""
    letters: set[str] = set()
    rows = []
    for task, result in _tasks(metrics):
        spread = result.get("letter_spread") or {}
        for model, label in (("base", "base"), ("finetuned", "fine-tuned")):
            stats = spread.get(model)
            if not isinstance(stats, Mapping):
                continue
            shares = stats.get("shares") or {}
            letters.update(shares)
            rows.append(
                {
                    "dataset": task,
                    "model": label,
                    "shares": {
                        letter: format_number(v, percent=True) for letter, v in shares.items()
                    },
                    "max_share": format_number(stats.get("max_share"), percent=True),
                    "entropy": format_number(stats.get("entropy"), percent=False),
                }
            )
    return sorted(letters), rows


def per_subject_rows(
    metrics: Mapping[str, Any], significance_se: float = 2.0
) -> list[dict[str, Any]]:
    """Letter accuracy per task and subject, formatted like :func:`results_table_rows`."""
    rows = []
    for task, result in _tasks(metrics):
        for subject in result.get("per_subject") or []:
            rows.append(
                {
                    "dataset": task,
                    "subject": str(subject.get("subject")),
                    "n": str(subject.get("n", MISSING)),
                    **_comparison_cells(subject, significance_se, percent=True),
                }
            )
    return rows


def _top_letter(stats: Mapping[str, Any]) -> tuple[str, float] | None:
    shares = {k: v for k, v in (stats.get("shares") or {}).items() if is_number(v)}
    if not shares:
        return None
    letter = max(sorted(shares), key=shares.__getitem__)
    share = stats.get("max_share")
    return letter, float(share if is_number(share) else shares[letter])


def task_summary(
    task: str,
    result: Mapping[str, Any],
    significance_se: float = 2.0,
    collapse_share: float = 0.5,
) -> str:
    """A plain sentence on the paired letter-accuracy change against its noise, and on how
    much each model leans on one letter (a model collapsed onto one letter can look like a win).
    """
    n = result.get("n")
    head = f"{task} (n = {n})" if n is not None else task
    row = next((m for m in result.get("metrics") or [] if m.get("metric") == "letter_acc"), None)
    if row is None or not is_number(row.get("change")):
        sentences = [f"{head}: letter accuracy could not be compared."]
    else:
        change, se = row["change"], row.get("change_se")
        text = (
            f"{head}: letter accuracy {format_number(row.get('base'), percent=True)}% → "
            f"{format_number(row.get('finetuned'), percent=True)}%, a paired change of "
            f"{format_number(change, percent=True, signed=True)} points"
        )
        if not is_number(se):
            text += ", with no standard error to judge it by (too few questions)."
        else:
            bound = format_number(significance_se * se, percent=True)
            if is_significant(change, se, significance_se):
                text += (
                    f", larger than {significance_se:g} SE ({bound} points): unlikely to be noise."
                )
            else:
                text += (
                    f", within {significance_se:g} SE ({bound} points): "
                    "not distinguishable from noise."
                )
        sentences = [text]

    spread = result.get("letter_spread") or {}
    leaning, collapsed = [], []
    for model, label in (("base", "the base model"), ("finetuned", "the fine-tuned model")):
        stats = spread.get(model)
        top = _top_letter(stats) if isinstance(stats, Mapping) else None
        if top is None:
            continue
        letter, share = top
        leaning.append(f"{label} {format_number(share, percent=True)}% on {letter}")
        if share >= collapse_share:
            collapsed.append(label)
    if leaning:
        sentences.append(f"Most predicted letter: {'; '.join(leaning)}.")
    if collapsed:
        sentences.append(
            f"{' and '.join(collapsed).capitalize()} put{'s' if len(collapsed) == 1 else ''} "
            f"at least {format_number(collapse_share, percent=True)}% of answers on one letter: "
            "accuracy then partly reflects how often that letter is right, not knowledge."
        )
    return " ".join(sentences)


def heldout_blocks(
    metrics: Mapping[str, Any], *, significance_se: float, collapse_share: float
) -> list[Block]:
    """The results section: per-task metrics, a sentence per task, letter shares, subjects.

    A change is bold beyond ``significance_se`` paired SE; a model with ``collapse_share`` of
    its answers on one letter is called out.
    """
    rows = results_table_rows(metrics, significance_se)
    blocks: list[Block] = [
        Heading("Results"),
        Paragraph(
            f"Split {metrics.get('split', MISSING)}; base model "
            f"{metrics.get('base_model', MISSING)}; adapter {metrics.get('adapter', MISSING)}."
        ),
    ]
    if not rows:
        return [*blocks, Paragraph("No evaluation results.")]
    blocks += [
        Table(
            ["dataset", "metric", "base", "fine-tuned", "change ± SE"],
            [
                [
                    row["dataset"],
                    Styled(row["metric"], "code"),
                    row["base"],
                    row["finetuned"],
                    strong_if(row["change"], row["significant"]),
                ]
                for row in rows
            ],
            align="llrrr",
        ),
        Paragraph(
            "Accuracies and shares in percent ± 1 standard error over questions; their changes "
            "in percentage points, with the paired standard error (both models answer the same "
            f"questions). Bold: |change| > {significance_se:g} SE. Perplexity and entropy to 3 "
            f"significant digits; {MISSING}: not defined (for example an SE from a single "
            "question)."
        ),
        Bullets(
            [
                f"{name}: {note}"
                for name, note in METRIC_NOTES.items()
                if any(row["metric"] == name for row in rows)
            ]
        ),
        Heading("Reading the results"),
    ]
    blocks += [
        Paragraph(task_summary(task, result, significance_se, collapse_share))
        for task, result in _tasks(metrics)
    ]
    letters, spread = letter_spread_rows(metrics)
    if spread:
        blocks += [
            Heading("Predicted-letter shares"),
            Paragraph(
                "Share of questions (percent) answered with each letter. A fine-tune that moves "
                "most answers onto one letter can raise accuracy without knowing more."
            ),
            Table(
                ["dataset", "model", *letters, "max share", "entropy"],
                [
                    [
                        row["dataset"],
                        row["model"],
                        *(row["shares"].get(letter, MISSING) for letter in letters),
                        row["max_share"],
                        row["entropy"],
                    ]
                    for row in spread
                ],
                align="ll" + "r" * (len(letters) + 2),
            ),
        ]
    subjects = per_subject_rows(metrics, significance_se)
    if subjects:
        blocks += [
            Heading("Per subject"),
            FigureRef(
                "per_subject",
                "Letter accuracy per subject, base vs fine-tuned, ±1 SE",
                "per_subject_plot",
            ),
            Table(
                ["dataset", "subject", "n", "base", "fine-tuned", "change ± SE"],
                [
                    [
                        row["dataset"],
                        row["subject"],
                        row["n"],
                        row["base"],
                        row["finetuned"],
                        strong_if(row["change"], row["significant"]),
                    ]
                    for row in subjects
                ],
                align="llrrrr",
            ),
        ]
    return blocks
