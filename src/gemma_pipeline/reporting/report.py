"""The run report: results, letter spread, per-subject accuracy, benchmarks, training, data and
versions, as blocks (``reporting.blocks``) rendered to markdown and to a self-contained HTML page.

Inputs are the run's JSON artifacts as loaded by the catalog (``heldout_metrics``,
``benchmark_metrics``, ``train_metrics``, ``ingest_summary``) and the ``run_metadata`` the
RunMetadataHook collects (versions only, no parameters). Configuration is shown as given: the
caller redacts it (``gemma_pipeline.tracking.redact``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from gemma_pipeline.reporting.blocks import (
    Block,
    Bullets,
    Cell,
    CodeBlock,
    FigureRef,
    Heading,
    Paragraph,
    Styled,
    Table,
    render_html_page,
    render_markdown_blocks,
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


# --- sections ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportInputs:
    """Everything one report shows. ``config`` is shown as given: redact it first."""

    heldout_metrics: Mapping[str, Any]
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
    metrics, k = inputs.heldout_metrics, inputs.significance_se
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
    if not is_number(seconds):
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
        ["trainable parameters", f"{params:,}" if is_number(params) else MISSING],
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


# --- benchmarks -------------------------------------------------------------------------------

#: The style of the tasks lm-evaluation-harness ran itself (``evaluate.lm_eval_tasks``).
LM_EVAL_STYLE = "lm-eval"
_RUN_FIELDS = ("task", "shots", "style")
_RECORD_FIELDS = (*_RUN_FIELDS, "model", "metric", "level", "group", "value", "stderr", "n")
_MODELS = ("base", "finetuned")

Run = tuple[str, Any, str]  # (task, shots, style)


class NumberKey(NamedTuple):
    """What one benchmark number is, whichever model it is of."""

    task: str
    shots: Any
    style: str
    level: str
    group: Any
    metric: str

    @property
    def run(self) -> Run:
        return (self.task, self.shots, self.style)


#: Per number, its record per model ("base", "finetuned").
PairedRecords = dict[NumberKey, dict[str, Mapping[str, Any]]]


def _require(entry: Any, fields: Sequence[str], where: str) -> None:
    if not isinstance(entry, Mapping):
        raise ValueError(f"benchmark_metrics {where}: expected a mapping, got {entry!r}")
    missing = [name for name in fields if name not in entry]
    if missing:
        raise ValueError(f"benchmark_metrics {where}: missing {', '.join(missing)}")


def benchmark_runs(bench: Mapping[str, Any]) -> list[Run]:
    """The configured (task, shots, style) runs, in order (lm-eval's own tasks are not runs)."""
    runs = []
    for i, run in enumerate(bench.get("runs") or []):
        _require(run, _RUN_FIELDS, f"runs[{i}]")
        if run["style"] != LM_EVAL_STYLE:
            runs.append((run["task"], run["shots"], run["style"]))
    return runs


def paired_records(bench: Mapping[str, Any]) -> PairedRecords:
    """``benchmark_metrics["records"]`` by number and model, in the order numbers first appear.

    A record missing a field, of another model, of a run not in ``runs`` (other than lm-eval's
    own tasks) or repeating another is an error naming it: none is skipped.
    """
    if "records" not in bench:
        raise ValueError(
            "benchmark_metrics: no 'records' (a file from before the records layout? "
            "re-run evaluate_benchmarks)"
        )
    runs = set(benchmark_runs(bench))
    paired: PairedRecords = {}
    for i, record in enumerate(bench["records"]):
        where = f"records[{i}]"
        _require(record, _RECORD_FIELDS, where)
        key = NumberKey(*(record[name] for name in (*_RUN_FIELDS, "level", "group", "metric")))
        if key.style != LM_EVAL_STYLE and key.run not in runs:
            raise ValueError(f"benchmark_metrics {where}: run {key.run} is not in runs")
        if record["model"] not in _MODELS:
            raise ValueError(
                f"benchmark_metrics {where}: model {record['model']!r} is not one of {_MODELS}"
            )
        models = paired.setdefault(key, {})
        if record["model"] in models:
            raise ValueError(f"benchmark_metrics {where}: repeats the {record['model']} {key}")
        models[record["model"]] = record
    return paired


def _count(models: Mapping[str, Mapping[str, Any]]) -> str:
    # The base model's count; the fine-tuned one's where only it was scored.
    n = (models.get("base") or models["finetuned"]).get("n")
    return MISSING if n is None else str(n)


def _estimate(record: Mapping[str, Any] | None) -> str:
    record = record or {}
    return format_estimate(record.get("value"), record.get("stderr"), percent=True)


def benchmark_table_rows(
    bench: Mapping[str, Any], significance_se: float = 2.0
) -> list[dict[str, Any]]:
    """One row per run (in ``runs`` order) and task-level metric: formatted base, fine-tuned
    and change (``significant``: beyond ``significance_se`` unpaired SE), and the count ``n``.
    """
    paired = paired_records(bench)
    rows = []
    for run in benchmark_runs(bench):
        for key, models in paired.items():
            if key.run != run or key.level != "task":
                continue
            base, tuned = models.get("base", {}), models.get("finetuned", {})
            b, f = base.get("value"), tuned.get("value")
            change = f - b if is_number(b) and is_number(f) else None
            # The models answer the same questions, but only their SEs are kept: unpaired.
            se = math.sqrt((base.get("stderr") or 0) ** 2 + (tuned.get("stderr") or 0) ** 2)
            rows.append(
                {
                    "task": key.task,
                    "shots": f"{key.shots}-shot",
                    "style": key.style,
                    "metric": key.metric,
                    "base": _estimate(base),
                    "finetuned": _estimate(tuned),
                    "change": format_number(change, percent=True, signed=True),
                    "significant": is_significant(change, se, significance_se),
                    "n": _count(models),
                }
            )
    return rows


def _mmlu_category_blocks(bench: Mapping[str, Any], paired: PairedRecords) -> list[Block]:
    mmlu_runs = [run for run in benchmark_runs(bench) if run[0] == "mmlu"]
    if not mmlu_runs:
        return []
    last = mmlu_runs[-1]
    categories = sorted(
        (
            (str(key.group), models)
            for key, models in paired.items()
            if key.run == last and key.level == "category"
        ),
        key=lambda item: item[0],
    )
    if not categories:
        return []
    task, shots, style = last
    return [
        Paragraph(f"MMLU by category ({task}, {shots}-shot, {style}), micro average:"),
        Table(
            ["category", "base", "fine-tuned", "questions"],
            [
                [
                    category,
                    _estimate(models.get("base")),
                    _estimate(models.get("finetuned")),
                    _count(models),
                ]
                for category, models in categories
            ],
            align="lrrr",
        ),
    ]


def _lm_eval_blocks(paired: PairedRecords) -> list[Block]:
    keys = sorted(
        (key for key in paired if key.style == LM_EVAL_STYLE and key.level == "task"),
        key=lambda key: (key.task, key.metric),
    )
    if not keys:
        return []
    rows = [
        [
            key.task,
            key.metric,
            *(
                format_number((paired[key].get(model) or {}).get("value"), percent=False)
                for model in _MODELS
            ),
        ]
        for key in keys
    ]
    return [
        Paragraph("Other tasks, run by lm-evaluation-harness itself:"),
        Table(["lm-eval task", "metric", "base", "fine-tuned"], rows, align="llrr"),
    ]


def _benchmark_blocks(inputs: ReportInputs) -> list[Block]:
    bench = inputs.benchmark_metrics
    if not bench:
        return []
    rows = benchmark_table_rows(bench, inputs.significance_se)
    paired = paired_records(bench)
    return [
        Heading("Benchmarks in lm-evaluation-harness's format"),
        Paragraph(
            "Style plain is lm-eval's own prompt text, comparable with published numbers; "
            "style chat is the chat-template format the fine-tune was trained on. Values are "
            "percentages ± standard error; a change in bold exceeds "
            f"{inputs.significance_se:g} SE of the difference (unpaired, so conservative)."
        ),
        Table(
            ["task", "shots", "style", "metric", "base", "fine-tuned", "change", "n"],
            [
                [
                    *(row[name] for name in ("task", "shots", "style", "metric")),
                    row["base"],
                    row["finetuned"],
                    _strong_if(row["change"], row["significant"]),
                    row["n"],
                ]
                for row in rows
            ],
            align="llllrrrr",
        ),
        *_mmlu_category_blocks(bench, paired),
        *_lm_eval_blocks(paired),
        Paragraph(f"Benchmark rows rejected at ingest: {inputs.benchmark_rejected_rows}."),
    ]


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


def render_markdown(inputs: ReportInputs) -> str:
    """The report as markdown (figures referenced by their catalog dataset, not embedded)."""
    return render_markdown_blocks(report_blocks(inputs))


def render_html(inputs: ReportInputs, images: Mapping[str, str]) -> str:
    """The report as one self-contained HTML page.

    ``images`` maps a figure key (``per_subject``, ``loss_curve``) to its base64 PNG
    (``plots.png_base64``); the page needs nothing else to display.
    """
    return render_html_page(report_blocks(inputs), inputs.title, images)
