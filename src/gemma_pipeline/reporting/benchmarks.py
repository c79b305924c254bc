"""The benchmarks in lm-evaluation-harness's format: base vs fine-tuned per configured run
(task, shots, prompt style), MMLU by category, and the tasks lm-eval ran itself.

Reads the ``benchmark_metrics`` records (one number of one model each), pairs them by what they
measure and rejects, naming it, any record it cannot place: a benchmark number is never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from gemma_pipeline.reporting.blocks import Block, Heading, Paragraph, Table, strong_if
from gemma_pipeline.reporting.formatting import (
    MISSING,
    format_estimate,
    format_number,
    is_significant,
)

#: The style of the tasks lm-evaluation-harness ran itself (``evaluate.lm_eval_tasks``).
LM_EVAL_STYLE = "lm-eval"
_RUN_FIELDS = ("task", "shots", "style")
_RECORD_FIELDS = (*_RUN_FIELDS, "model", "metric", "level", "group", "value", "stderr", "n")
_MODELS = ("base", "finetuned")
#: Each number of both models also has a "change" record: fine-tuned minus base, with its SE.
_KINDS = (*_MODELS, "change")

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
            "benchmark_metrics: no 'records' (a file written before the records layout? "
            "rerun kedro run --pipeline evaluation)"
        )
    runs = set(benchmark_runs(bench))
    paired: PairedRecords = {}
    for i, record in enumerate(bench["records"]):
        where = f"records[{i}]"
        _require(record, _RECORD_FIELDS, where)
        key = NumberKey(*(record[name] for name in (*_RUN_FIELDS, "level", "group", "metric")))
        if key.style != LM_EVAL_STYLE and key.run not in runs:
            raise ValueError(f"benchmark_metrics {where}: run {key.run} is not in runs")
        if record["model"] not in _KINDS:
            raise ValueError(
                f"benchmark_metrics {where}: model {record['model']!r} is not one of {_KINDS}"
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
            change = models.get("change", {})
            rows.append(
                {
                    "task": key.task,
                    "shots": f"{key.shots}-shot",
                    "style": key.style,
                    "metric": key.metric,
                    "base": _estimate(base),
                    "finetuned": _estimate(tuned),
                    "change": format_number(change.get("value"), percent=True, signed=True),
                    "significant": is_significant(
                        change.get("value"), change.get("stderr"), significance_se
                    ),
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


def benchmark_blocks(
    bench: Mapping[str, Any], *, significance_se: float, rejected_rows: int
) -> list[Block]:
    """The benchmarks section (none without ``benchmark_metrics``): the runs' table, MMLU by
    category, lm-eval's own tasks and how many benchmark rows ingest rejected.
    """
    if not bench:
        return []
    rows = benchmark_table_rows(bench, significance_se)
    paired = paired_records(bench)
    return [
        Heading("Benchmarks in lm-evaluation-harness's format"),
        Paragraph(
            "Style plain is lm-eval's own prompt text, comparable with published numbers; "
            "style chat is the chat-template format the fine-tune was trained on. Values are "
            "percentages ± standard error; a change in bold exceeds "
            f"{significance_se:g} SE of the difference (unpaired, so conservative)."
        ),
        Table(
            ["task", "shots", "style", "metric", "base", "fine-tuned", "change", "n"],
            [
                [
                    *(row[name] for name in ("task", "shots", "style", "metric")),
                    row["base"],
                    row["finetuned"],
                    strong_if(row["change"], row["significant"]),
                    row["n"],
                ]
                for row in rows
            ],
            align="llllrrrr",
        ),
        *_mmlu_category_blocks(bench, paired),
        *_lm_eval_blocks(paired),
        Paragraph(f"Benchmark rows rejected at ingest: {rejected_rows}."),
    ]
