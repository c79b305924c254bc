"""Project pipelines, registered explicitly (kedro >= 1.5 only auto-finds real folders)."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from gemma_pipeline.pipelines import format_prompts, ingest, tokenize


def register_pipelines() -> dict[str, Pipeline]:
    """Each stage alone, the stages as named groups, and the whole chain as the default."""
    stages = {
        "ingest": ingest.create_pipeline(),
        "format_prompts": format_prompts.create_pipeline(),
        "tokenize": tokenize.create_pipeline(),
    }
    data = stages["ingest"] + stages["format_prompts"] + stages["tokenize"]
    return {**stages, "data": data, "__default__": data}
