"""The page's text and HTML, from the session's answers (pure functions)."""

from __future__ import annotations

from html import escape

import pandas as pd

from gemma_pipeline.reporting.heldout import results_table_rows

from .session import MODELS, HeldOutAnswer, SideBySide, letter

LABELS = {"base": "Base", "finetuned": "Fine-tuned"}
# The report's per-subject plot colours (matplotlib's first two), so both tabs read alike.
COLOURS = {"base": "#1f77b4", "finetuned": "#ff7f0e"}
CELL = "border:none;padding:6px 10px;"
ROW = "border:none;border-top:1px solid #e2e8f0"  # Gradio draws dark borders on every side


def header_markdown(session: SideBySide) -> str:
    results = session.results
    counts = results.questions.groupby("task").size()
    evaluated = ", ".join(f"{n} {task}" for task, n in counts.items())
    return (
        "## gemma-pipeline · base vs fine-tuned\n"
        f"**Base** `{session.base_name}` · **Fine-tune** adapter `{session.adapter_version}` "
        "(LoRA on the base, unmerged, loaded as `evaluate` loads it) · **Metrics** from "
        f"evaluation `{results.version}` on the held-out `{results.split}` split "
        f"({evaluated} questions)"
    )


def results_frame(session: SideBySide) -> pd.DataFrame:
    rows = results_table_rows(session.results.metrics)
    return pd.DataFrame(
        [
            {
                "dataset": row["dataset"],
                "metric": row["metric"],
                "base": row["base"],
                "fine-tuned": row["finetuned"],
                "change": row["change"] + (" *" if row["significant"] else ""),
            }
            for row in rows
        ],
        columns=["dataset", "metric", "base", "fine-tuned", "change"],
    )


def _bar(model: str, probability: float) -> str:
    width = max(0.0, min(1.0, probability)) * 100
    return (
        f'<td class="p" data-model="{model}" data-p="{probability:.9f}" '
        f'style="{CELL}width:26%">'
        '<div style="display:flex;align-items:center;gap:8px">'
        '<div style="flex:1;background:#f1f5f9;border-radius:4px;height:12px">'
        f'<div style="width:{width:.1f}%;background:{COLOURS[model]};height:12px;'
        'border-radius:4px"></div></div>'
        f'<span style="font-variant-numeric:tabular-nums;width:4.2em;text-align:right">'
        f"{probability * 100:.1f}%</span></div></td>"
    )


def _verdict(answer: HeldOutAnswer, model: str) -> str:
    verdict = answer.verdicts[model]
    ok = verdict.correct
    colour, word = ("#15803d", "right") if ok else ("#b91c1c", "wrong")
    return (
        f'<span class="verdict" data-model="{model}" data-correct="{str(ok).lower()}" '
        f'style="display:inline-block;margin-right:14px;padding:3px 10px;border-radius:12px;'
        f'border:1px solid {colour};color:{colour}">{LABELS[model]} chose '
        f"<b>{letter(verdict.choice)}</b>: {word}</span>"
    )


def heldout_html(answer: HeldOutAnswer) -> str:
    """The question, each option's probability under both models, the correct option marked."""
    question = answer.question
    rows = []
    for i, text in enumerate(question["choices"]):
        correct = i == question["answer"]
        marks = "".join(
            f' <span title="{LABELS[m]} chose this" style="color:{COLOURS[m]}">●</span>'
            for m in MODELS
            if answer.verdicts[m].choice == i
        )
        rows.append(
            f'<tr class="option{" correct" if correct else ""}" data-letter="{letter(i)}" '
            f'data-correct="{str(correct).lower()}" '
            f'style="{"background:#f0fdf4;" if correct else ""}{ROW}">'
            f'<td style="{CELL}white-space:nowrap;width:1%"><b>{letter(i)}.</b>{marks}</td>'
            f'<td style="{CELL}">{escape(text)}'
            f"{' <b style=color:#15803d>✓ correct</b>' if correct else ''}</td>"
            + "".join(_bar(m, answer.verdicts[m].probabilities[i]) for m in MODELS)
            + "</tr>"
        )
    stored = ", ".join(
        f"{LABELS[m].lower()} {answer.verdicts[m].stored_choice or '?'}" for m in MODELS
    )
    same = all(
        answer.verdicts[m].stored_choice == letter(answer.verdicts[m].choice) for m in MODELS
    )
    subject = question["subject"].replace("_", " ") or "—"
    return (
        '<div id="heldout" style="font-size:15px;line-height:1.45">'
        f'<div style="color:#64748b;font-size:13px">{escape(question["task"])} · '
        f"{escape(subject)} · {escape(question['row_id'])}</div>"
        f'<p style="white-space:pre-wrap;margin:6px 0 12px">{escape(question["question"])}</p>'
        '<table style="border-collapse:collapse;width:100%;border:none">'
        '<thead><tr style="border:none;text-align:left;color:#475569;font-size:13px">'
        f'<th style="{CELL}"></th><th style="{CELL}">option</th>'
        + "".join(
            f'<th style="{CELL}"><span style="color:{COLOURS[m]}">■</span> {LABELS[m]} '
            "p(letter)</th>"
            for m in MODELS
        )
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        f'<div style="margin-top:12px">{"".join(_verdict(answer, m) for m in MODELS)}</div>'
        '<p style="color:#64748b;font-size:12px;margin-top:10px">● marks each model&#39;s choice. '
        "p(letter): the answer letter "
        "as the model turn's first token, renormalized over the offered letters — the scoring of "
        f"the report's held-out <code>letter_acc</code>. In the run, evaluate chose: {stored}"
        f"{' (the same)' if same else ' (not the same)'}.</p></div>"
    )
