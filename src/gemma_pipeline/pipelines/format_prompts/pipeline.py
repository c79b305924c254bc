"""Wiring of the format_prompts pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import format_prompts


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=format_prompts,
                inputs=["questions", "params:format_prompts", "params:model"],
                outputs="prompts",
                name="format_prompts",
            ),
        ]
    )
