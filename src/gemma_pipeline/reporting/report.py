"""The run report: results, letter spread, per-subject accuracy, training, data and versions.

The content is built once, as a list of blocks (headings, paragraphs, tables, code, figures),
and rendered twice: to markdown and to a self-contained HTML page with the figures embedded.
Both renderings therefore always say the same thing.

Inputs are the run's JSON artifacts as loaded by the catalog (``metrics``, ``train_metrics``,
``ingest_summary``) and the ``run_metadata`` the RunMetadataHook collects (versions only, no
parameters). Configuration is shown as given: the caller redacts it
(``gemma_pipeline.tracking.redact``).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from gemma_pipeline.reporting.plots import plot_per_subject

__all__ = [
    "ReportInputs",
    "format_estimate",
    "is_significant",
    "letter_spread_rows",
    "per_subject_rows",
    "plot_per_subject",
    "render_html",
    "render_markdown",
    "report_blocks",
    "results_table_rows",
    "task_summary",
]

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

MISSING = "—"


# --- numbers ----------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def format_number(value: Any, *, percent: bool, signed: bool = False) -> str:
    """A share in percent with one decimal, anything else to 3 significant digits."""
    if not _is_number(value):
        return MISSING
    sign = "+" if signed else ""
    if percent:
        return f"{value * 100:{sign}.1f}"
    return f"{float(f'{value:.3g}'):{sign}.{_decimals(value)}f}"


def _decimals(value: float) -> int:
    # Decimals that 3 significant digits leave: 12.345 -> 1, 0.0123 -> 4, 1234.5 -> 0.
    if value == 0:
        return 0
    return max(0, 2 - math.floor(math.log10(abs(float(f"{value:.3g}")))))


def format_estimate(value: Any, se: Any, *, percent: bool, signed: bool = False) -> str:
    """``"25.0 ± 4.4"``; the bare value where there is no SE; ``"—"`` where no value.

    The SE gets as many decimals as the value, so both read at the same precision.
    """
    text = format_number(value, percent=percent, signed=signed)
    if text == MISSING or not _is_number(se):
        return text
    if percent:
        return f"{text} ± {se * 100:.1f}"
    return f"{text} ± {se:.{_decimals(value) if value else _decimals(se)}f}"


def is_significant(change: Any, change_se: Any, significance_se: float = 2.0) -> bool:
    """Whether ``|change| > significance_se · SE`` (never without both numbers)."""
    if not (_is_number(change) and _is_number(change_se)):
        return False
    return abs(change) > significance_se * change_se


# --- tables as data ---------------------------------------------------------------------------


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
    shares = {k: v for k, v in (stats.get("shares") or {}).items() if _is_number(v)}
    if not shares:
        return None
    letter = max(sorted(shares), key=shares.__getitem__)
    share = stats.get("max_share")
    return letter, float(share if _is_number(share) else shares[letter])


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
    if row is None or not _is_number(row.get("change")):
        sentences = [f"{head}: letter accuracy could not be compared."]
    else:
        change, se = row["change"], row.get("change_se")
        text = (
            f"{head}: letter accuracy {format_number(row.get('base'), percent=True)}% → "
            f"{format_number(row.get('finetuned'), percent=True)}%, a paired change of "
            f"{format_number(change, percent=True, signed=True)} points"
        )
        if not _is_number(se):
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


# --- blocks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Styled:
    """A table cell's text shown bold (``strong``) or as code (``code``)."""

    text: str
    style: Literal["strong", "code"]


Cell = str | Styled


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    # "l" or "r" per column; numbers read best right-aligned.
    align: Sequence[str] = ()


@dataclass(frozen=True)
class CodeBlock:
    text: str
    language: str = ""


@dataclass(frozen=True)
class FigureRef:
    """A figure: embedded as base64 PNG in HTML, pointed to by catalog dataset in markdown."""

    key: str
    caption: str
    dataset: str


Block = Heading | Paragraph | Bullets | Table | CodeBlock | FigureRef


@dataclass(frozen=True)
class ReportInputs:
    """Everything one report shows. ``config`` is shown as given: redact it first."""

    metrics: Mapping[str, Any]
    train_metrics: Mapping[str, Any] = field(default_factory=dict)
    ingest_summary: Mapping[str, Any] = field(default_factory=dict)
    run_metadata: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    benchmark_metrics: Mapping[str, Any] = field(default_factory=dict)
    benchmark_rejected_rows: int = 0
    title: str = "Gemma QLoRA fine-tune: base vs fine-tuned"
    significance_se: float = 2.0
    collapse_share: float = 0.5


def _strong_if(text: str, condition: bool) -> Cell:
    return Styled(text, "strong") if condition else text


def _results_blocks(inputs: ReportInputs) -> list[Block]:
    metrics, k = inputs.metrics, inputs.significance_se
    rows = results_table_rows(metrics, k)
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
                    _strong_if(row["change"], row["significant"]),
                ]
                for row in rows
            ],
            align="llrrr",
        ),
        Paragraph(
            "Accuracies and shares in percent ± 1 standard error over questions; their changes "
            "in percentage points, with the paired standard error (both models answer the same "
            f"questions). Bold: |change| > {k:g} SE. Perplexity and entropy to 3 significant "
            f"digits; {MISSING}: not defined (for example an SE from a single question)."
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
        Paragraph(task_summary(task, result, k, inputs.collapse_share))
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
    subjects = per_subject_rows(metrics, k)
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
                        _strong_if(row["change"], row["significant"]),
                    ]
                    for row in subjects
                ],
                align="llrrrr",
            ),
        ]
    return blocks


def _duration(seconds: Any) -> str:
    if not _is_number(seconds):
        return MISSING
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _quantization(setup: Mapping[str, Any]) -> str:
    quant = setup.get("quantization")
    if not isinstance(quant, Mapping):
        return "none" if "quantization" in setup else MISSING
    if quant.get("load_in_4bit"):
        kind = quant.get("bnb_4bit_quant_type", "")
        compute = quant.get("bnb_4bit_compute_dtype", "")
        return f"4-bit {kind}, compute {compute}".strip(", ")
    if quant.get("load_in_8bit"):
        return "8-bit"
    return str(quant.get("quant_method", "yes"))


def _training_blocks(train: Mapping[str, Any]) -> list[Block]:
    if not train:
        return [Heading("Training"), Paragraph("No training metrics.")]
    setup = train.get("setup") if isinstance(train.get("setup"), Mapping) else {}
    params = train.get("trainable_parameters")
    rows = [
        ["train rows", str(train.get("train_rows", MISSING))],
        ["optimizer steps", str(train.get("global_steps", MISSING))],
        ["final train loss", format_number(train.get("final_train_loss"), percent=False)],
        ["wall time", _duration(train.get("wall_seconds"))],
        ["trainable parameters", f"{params:,}" if _is_number(params) else MISSING],
        ["device", str(setup.get("device", MISSING))],
        ["quantization", _quantization(setup)],
        ["run fingerprint", Styled(str(train.get("fingerprint", MISSING)), "code")],
    ]
    return [
        Heading("Training"),
        Table(["", "value"], rows, align="lr"),
        FigureRef(
            "loss_curve",
            "Training loss and learning rate by optimizer step",
            "loss_curve",
        ),
    ]


def _data_blocks(summary: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading("Data: accepted and rejected rows")]
    counts = summary.get("counts") or {}
    rows = [
        [
            str(source),
            str(split),
            *(str(numbers.get(key, MISSING)) for key in ("read", "accepted", "rejected")),
        ]
        for source, splits in sorted(counts.items())
        for split, numbers in sorted((splits or {}).items())
        if isinstance(numbers, Mapping)
    ]
    if rows:
        blocks.append(
            Table(["source", "split", "read", "accepted", "rejected"], rows, align="llrrr")
        )
    else:
        blocks.append(Paragraph("No ingest summary."))
    reasons = summary.get("rejected_by_reason") or {}
    if reasons:
        blocks += [
            Paragraph("Rejected rows by reason (a row can fail for more than one):"),
            Table(
                ["reason", "rows"],
                [[str(reason), str(n)] for reason, n in sorted(reasons.items())],
                align="lr",
            ),
        ]
    elif rows:
        blocks.append(Paragraph("No row was rejected."))
    return blocks


def _as_yaml(value: Any) -> str:
    try:
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip()
    except yaml.YAMLError:
        return json.dumps(value, indent=2, default=str)


def _config_blocks(config: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading("Configuration")]
    if not config:
        return [*blocks, Paragraph("No configuration recorded.")]
    for section, values in config.items():
        blocks += [Heading(str(section), level=3), CodeBlock(_as_yaml(values), "yaml")]
    return blocks


def _versions_blocks(meta: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading("Versions")]
    if not meta:
        return [*blocks, Paragraph("No run metadata.")]
    git = meta.get("git") or {}
    commit = git.get("commit") or MISSING
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    blocks.append(
        Table(
            ["", "value"],
            [
                ["kedro session", str(meta.get("session_id") or MISSING)],
                ["save version (this run)", str(meta.get("save_version") or MISSING)],
                ["environment", str(meta.get("env") or MISSING)],
                ["pipelines", ", ".join(meta.get("pipeline_names") or ["__default__"])],
                ["git commit", Styled(commit, "code") if commit != MISSING else MISSING],
                ["python", str(meta.get("python") or MISSING)],
            ],
            align="ll",
        )
    )
    written = set(meta.get("written_this_run") or [])
    pinned = meta.get("load_versions") or {}
    data_rows = []
    for name, version in sorted((meta.get("dataset_versions") or {}).items()):
        if name in written:
            shown, how = meta.get("save_version") or MISSING, "written by this run"
        elif name in pinned:
            shown, how = pinned[name], "pinned (--load-versions)"
        elif version is None:
            shown, how = MISSING, "nothing saved yet"
        else:
            shown, how = version, "latest at run start"
        data_rows.append([name, str(shown), how])
    if data_rows:
        blocks += [
            Heading("Data versions", level=3),
            Table(["dataset", "version", "source"], data_rows, align="lll"),
        ]
    packages = meta.get("packages") or {}
    if packages:
        blocks += [
            Heading("Packages", level=3),
            Table(
                ["package", "version"],
                [[name, str(v or "not installed")] for name, v in packages.items()],
                align="ll",
            ),
        ]
    return blocks


def _headline_metrics(run: Mapping[str, Any]) -> list[str]:
    return [key for key, value in run.items() if isinstance(value, Mapping) and "value" in value]


def _benchmark_blocks(inputs: ReportInputs) -> list[Block]:
    bench = inputs.benchmark_metrics
    models = bench.get("models") or {}
    if not models:
        return []
    base, tuned = models.get("base", {}), models.get("finetuned", {})
    blocks: list[Block] = [
        Heading("Benchmarks in lm-evaluation-harness's format"),
        Paragraph(
            "Style plain is lm-eval's own prompt text, comparable with published numbers; "
            "style chat is the chat-template format the fine-tune was trained on. Values are "
            "percentages ± standard error; a change in bold exceeds "
            f"{inputs.significance_se:g} SE of the difference (unpaired, so conservative)."
        ),
    ]
    rows = []
    for run in bench.get("runs", []):
        task, shots, style = run.split("|")
        for metric in _headline_metrics(base.get(run, {})):
            b, f = base[run][metric], tuned.get(run, {}).get(metric, {})
            change = (f.get("value") - b["value"]) if _is_number(f.get("value")) else None
            se = math.sqrt((b.get("stderr") or 0) ** 2 + (f.get("stderr") or 0) ** 2)
            rows.append(
                [
                    task,
                    shots,
                    style,
                    metric,
                    format_estimate(b["value"], b.get("stderr"), percent=True),
                    format_estimate(f.get("value"), f.get("stderr"), percent=True),
                    _strong_if(
                        format_number(change, percent=True, signed=True),
                        change is not None and is_significant(change, se, inputs.significance_se),
                    ),
                    str(b.get("n", MISSING)),
                ]
            )
    headers = ["task", "shots", "style", "metric", "base", "fine-tuned", "change", "n"]
    blocks.append(Table(headers, rows, align="llllrrrr"))
    mmlu_runs = [r for r in bench.get("runs", []) if r.startswith("mmlu|")]
    if mmlu_runs:
        run = mmlu_runs[-1]
        categories = sorted(base.get(run, {}).get("categories", {}))
        blocks += [
            Paragraph(f"MMLU by category ({run.replace('|', ', ')}), micro average:"),
            Table(
                ["category", "base", "fine-tuned", "questions"],
                [
                    [
                        c,
                        format_estimate(
                            base[run]["categories"][c]["value"],
                            base[run]["categories"][c]["stderr"],
                            percent=True,
                        ),
                        format_estimate(
                            tuned.get(run, {}).get("categories", {}).get(c, {}).get("value"),
                            tuned.get(run, {}).get("categories", {}).get(c, {}).get("stderr"),
                            percent=True,
                        ),
                        str(base[run]["categories"][c]["n"]),
                    ]
                    for c in categories
                ],
                align="lrrr",
            ),
        ]
    if base.get("lm_eval"):
        tuned_lm_eval = tuned.get("lm_eval", {})
        rows = [
            [
                task,
                metric,
                format_number(value["value"], percent=False),
                format_number(
                    tuned_lm_eval.get(task, {}).get(metric, {}).get("value"), percent=False
                ),
            ]
            for task, metrics in sorted(base["lm_eval"].items())
            for metric, value in sorted(metrics.items())
        ]
        blocks += [
            Paragraph("Other tasks, run by lm-evaluation-harness itself:"),
            Table(["lm-eval task", "metric", "base", "fine-tuned"], rows, align="llrr"),
        ]
    blocks.append(
        Paragraph(f"Benchmark rows rejected at ingest: {inputs.benchmark_rejected_rows}.")
    )
    return blocks


def report_blocks(inputs: ReportInputs) -> list[Block]:
    """The whole report, in order, as renderer-neutral blocks."""
    return [
        Heading(inputs.title, level=1),
        *_results_blocks(inputs),
        *_benchmark_blocks(inputs),
        *_training_blocks(inputs.train_metrics),
        *_data_blocks(inputs.ingest_summary),
        *_config_blocks(inputs.config),
        *_versions_blocks(inputs.run_metadata),
    ]


# --- markdown ---------------------------------------------------------------------------------

_MD_SPECIAL = str.maketrans({char: "\\" + char for char in "\\`*[]<>|"})


def _md(text: str) -> str:
    return str(text).replace("\n", " ").translate(_MD_SPECIAL)


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, Styled):
        if cell.style == "code":
            # A code span cannot escape its backticks; a pipe would still split the table.
            return "`" + cell.text.replace("`", "'").replace("|", "\\|") + "`"
        return f"**{_md(cell.text)}**"
    return _md(cell)


def _md_table(table: Table) -> str:
    align = list(table.align) or ["l"] * len(table.headers)
    lines = [
        "| " + " | ".join(_md(header) for header in table.headers) + " |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + _md(block.text)
    if isinstance(block, Paragraph):
        return _md(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md(item)}" for item in block.items)
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, CodeBlock):
        fence = "````" if "```" in block.text else "```"
        return f"{fence}{block.language}\n{block.text}\n{fence}"
    # Markdown stays a plain text file: the figure is embedded in report.html and saved as PNG.
    return (
        f"Figure: {_md(block.caption)} (embedded in report.html; PNG in catalog dataset "
        f"`{block.dataset}`)."
    )


def render_markdown(inputs: ReportInputs) -> str:
    """The report as markdown (figures referenced by their catalog dataset, not embedded)."""
    return "\n\n".join(_md_block(block) for block in report_blocks(inputs)) + "\n"


# --- HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #1a1a1a; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.7rem; text-align: left; }
th { border-bottom: 2px solid #999; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9rem; }
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_cell(cell: Cell, tag: str, align: str) -> str:
    css = ' class="r"' if align == "r" else ""
    if isinstance(cell, Styled):
        inner = f"<{cell.style}>{_esc(cell.text)}</{cell.style}>"
    else:
        inner = _esc(cell)
    return f"<{tag}{css}>{inner}</{tag}>"


def _html_table(table: Table) -> str:
    align = list(table.align) or ["l"] * len(table.headers)
    head = "".join(_html_cell(h, "th", a) for h, a in zip(table.headers, align, strict=False))
    body = "\n".join(
        "<tr>" + "".join(_html_cell(c, "td", a) for c, a in zip(row, align, strict=False)) + "</tr>"
        for row in table.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _html_block(block: Block, images: Mapping[str, str]) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_esc(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_esc(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_esc(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, CodeBlock):
        return f"<pre><code>{_esc(block.text)}</code></pre>"
    image = images.get(block.key)
    if not image:
        return f"<p>{_esc(block.caption)}: figure not available.</p>"
    return (
        f'<figure><img alt="{_esc(block.caption)}" src="data:image/png;base64,{_esc(image)}">'
        f"<figcaption>{_esc(block.caption)}</figcaption></figure>"
    )


def render_html(inputs: ReportInputs, images: Mapping[str, str]) -> str:
    """The report as one self-contained HTML page.

    ``images`` maps a figure key (``per_subject``, ``loss_curve``) to its base64 PNG
    (``plots.png_base64``); the page needs nothing else to display.
    """
    body = "\n".join(_html_block(block, images) for block in report_blocks(inputs))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(inputs.title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
