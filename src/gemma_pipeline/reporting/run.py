"""The run itself: how training went, which rows ingest accepted and rejected, the configuration
and the versions of code, data and packages, so a reader can tell how the numbers were made.

Reads ``train_metrics``, ``ingest_summary`` and the ``run_metadata`` the RunMetadataHook collects
(versions only, no parameters). Configuration is shown as given: the caller redacts it
(``gemma_pipeline.redaction.redact``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from gemma_pipeline.reporting.blocks import (
    Block,
    CodeBlock,
    FigureRef,
    Heading,
    Paragraph,
    Styled,
    Table,
)
from gemma_pipeline.reporting.formatting import MISSING, format_number, is_number


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


def _batching(setup: Mapping[str, Any]) -> str:
    """How each optimizer step's examples were computed: over how many data-parallel
    processes, in how many micro-batches each."""
    if "examples_per_step" not in setup:
        return MISSING
    processes = setup.get("processes", 1)
    accumulation = setup["gradient_accumulation_steps"]
    return (
        f"{setup['examples_per_step']} examples: {processes} "
        f"process{'es' if processes > 1 else ''} × {accumulation} "
        f"micro-batch{'es' if accumulation > 1 else ''} of ≤ {setup['micro_batch']} rows"
    )


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
        ["batch per optimizer step", _batching(setup)],
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


def run_blocks(
    *,
    train_metrics: Mapping[str, Any],
    ingest_summary: Mapping[str, Any],
    config: Mapping[str, Any],
    run_metadata: Mapping[str, Any],
) -> list[Block]:
    """The sections on how the run was made: training, data, configuration and versions."""
    return [
        *_training_blocks(train_metrics),
        *_data_blocks(ingest_summary),
        *_config_blocks(config),
        *_versions_blocks(run_metadata),
    ]
