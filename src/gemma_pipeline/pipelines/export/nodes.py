"""Nodes of the export pipeline: thin calls into ``gemma_pipeline.export`` and ``reporting``."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from gemma_pipeline.config import (
    EvaluateParams,
    ExportParams,
    IngestParams,
    ModelParams,
    ReportParams,
    TrainQloraParams,
    parse_params,
)
from gemma_pipeline.export.checks import check_exports
from gemma_pipeline.export.gguf import GgufFiles, export_gguf, files_in
from gemma_pipeline.export.hub import push_export, token_from
from gemma_pipeline.export.merged import MergedModel, base_plus_adapter, merged_in_memory
from gemma_pipeline.redaction import redact
from gemma_pipeline.reporting.model_card import CardInputs, model_card_markdown

logger = logging.getLogger(__name__)


def merge_adapter(
    adapter: str, export_params: dict[str, Any], model_params: dict[str, Any]
) -> MergedModel:
    """The adapter merged into the unquantized base; the dataset saves the whole folder."""
    params = parse_params(ExportParams, export_params, "export")
    model = parse_params(ModelParams, model_params, "model")
    logger.info("Merging %s into %s (%s)", adapter, model.name_or_path, params.merge_dtype)
    return merged_in_memory(model, adapter, dtype=params.merge_dtype)


def convert_to_gguf(merged_model: str, export_params: dict[str, Any]) -> GgufFiles:
    """f16 and q8_0 by llama.cpp's converter; q4_k_m by its quantizer when installed."""
    params = parse_params(ExportParams, export_params, "export")
    return export_gguf(merged_model, params.name, converter_dir=params.converter_dir)


def heldout_answers(
    prompts: pd.DataFrame, split: str, tasks: list[str] | None
) -> list[tuple[str, str]]:
    """The held-out questions of the tasks trained on (unrotated, by row id): prompt, answer."""
    unrotated = prompts["row_id"] == prompts["question_id"]
    trained = prompts["task"].isin(tasks) if tasks else True
    rows = prompts[(prompts["split"] == split) & unrotated & trained]
    rows = rows.sort_values("row_id", kind="stable")
    if rows.empty:
        raise ValueError(f"prompts has no rows in the '{split}' split to check exports on")
    return list(zip(rows["prompt"], rows["completion"], strict=True))


def check_export_files(
    merged_model: str,
    gguf_files: str,
    adapter: str,
    prompts: pd.DataFrame,
    export_params: dict[str, Any],
    model_params: dict[str, Any],
    evaluate_params: dict[str, Any],
    train_params: dict[str, Any],
) -> dict[str, Any]:
    """Every export against the model it came from (``export.checks``)."""
    params = parse_params(ExportParams, export_params, "export")
    model = parse_params(ModelParams, model_params, "model")
    split = parse_params(EvaluateParams, evaluate_params, "evaluate").split
    train = parse_params(TrainQloraParams, train_params, "train_qlora")
    # Scored as training scored them: its tasks, and the tokens its loss was on.
    heldout = heldout_answers(prompts, split, train.tasks)
    reference = base_plus_adapter(model, adapter, dtype="float32")
    checks = check_exports(
        merged_model, gguf_files, reference, heldout, params.checks, loss_on=train.loss_on
    )
    return {"adapter": adapter, "merged_model": merged_model, "gguf_files": gguf_files, **checks}


def write_model_card(
    export_checks: dict[str, Any],
    gguf_files: str,
    heldout_metrics: dict[str, Any],
    benchmark_metrics: dict[str, Any],
    run_metadata: dict[str, Any],
    export_params: dict[str, Any],
    model_params: dict[str, Any],
    ingest_params: dict[str, Any],
    train_params: dict[str, Any],
    report_params: dict[str, Any],
) -> tuple[str, str]:
    """The model card, twice: its own artifact, and the merged folder's README.md."""
    params = parse_params(ExportParams, export_params, "export")
    card = model_card_markdown(
        CardInputs(
            name=params.name,
            base_model=parse_params(ModelParams, model_params, "model").name_or_path,
            export_checks=export_checks,
            heldout_metrics=heldout_metrics,
            benchmark_metrics=benchmark_metrics,
            ingest=parse_params(IngestParams, ingest_params, "ingest").model_dump(),
            train=redact(parse_params(TrainQloraParams, train_params, "train_qlora").model_dump()),
            run_metadata=run_metadata,
            gguf_files=[path.name for path in files_in(gguf_files).values()],
            significance_se=parse_params(ReportParams, report_params, "report").significance_se,
        )
    )
    return card, card


def push_to_hub(
    merged_model_card: str,
    merged_model: str,
    gguf_files: str,
    export_checks: dict[str, Any],
    export_params: dict[str, Any],
) -> dict[str, Any]:
    """Upload when ``export.push_to_hub`` is set (the card is already in the merged folder)."""
    push = parse_params(ExportParams, export_params, "export").push_to_hub
    if push is None:
        return {"pushed": False, "reason": "export.push_to_hub is not set"}
    return push_export(
        push,
        token_from(None),
        merged_dir=merged_model,
        gguf_dir=gguf_files,
        export_checks=export_checks,
    )
