"""Wiring of the tokenize pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import tokenize_prompts


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=tokenize_prompts,
                inputs=["prompts", "params:tokenize", "params:model"],
                outputs="tokenized",
                name="tokenize_prompts",
            ),
        ]
    )
