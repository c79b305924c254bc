"""Project pipelines, registered explicitly (kedro >= 1.5 only auto-finds real folders)."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from gemma_pipeline.distributed import rank
from gemma_pipeline.pipelines import (
    evaluate,
    export,
    format_prompts,
    ingest,
    report,
    summarize,
    tokenize,
    train_qlora,
)


def register_pipelines() -> dict[str, Pipeline]:
    """Each stage alone, the stages in named groups, and the whole chain as the default.

    ``training`` builds its data and trains; ``evaluation`` scores the latest (or a pinned,
    ``--load-versions adapter:<timestamp>``) adapter, summarizes, exports it (merged folder,
    GGUF files, their checks, the model card) and writes the report; ``export`` alone exports;
    ``results`` recomputes the metrics and the report from stored predictions, with no model.
    """
    stages = {
        "ingest": ingest.create_pipeline(),
        "format_prompts": format_prompts.create_pipeline(),
        "tokenize": tokenize.create_pipeline(),
        "train_qlora": train_qlora.create_pipeline(),
        "evaluate": evaluate.create_pipeline(),
        "summarize": summarize.create_pipeline(),
        "export": export.create_pipeline(),
        "report": report.create_pipeline(),
    }
    data = stages["ingest"] + stages["format_prompts"] + stages["tokenize"]
    training = data + stages["train_qlora"]
    results = stages["summarize"] + stages["report"]
    # The report shows the export checks, so an evaluation exports the adapter it scored.
    evaluation = stages["evaluate"] + stages["export"] + results
    registered = {
        **stages,
        "data": data,
        "training": training,
        "evaluation": evaluation,
        "results": results,
        "__default__": training + evaluation,
    }
    if rank() > 0:  # another process of a data-parallel launch: it only helps train
        return {name: training_share(pipeline) for name, pipeline in registered.items()}
    return registered


def training_share(pipeline: Pipeline) -> Pipeline:
    """What a data-parallel launch's process of rank > 0 runs of ``pipeline``: ``train_qlora``
    and the nodes it needs, nothing after it (see ``hooks.DataParallelHook``)."""
    if "train_qlora" not in {node.name for node in pipeline.nodes}:
        return pipeline  # refused before any node runs
    return pipeline.to_nodes("train_qlora")
