"""Wiring of the evaluate pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_adapter


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=evaluate_adapter,
                inputs=[
                    "prompts",
                    "adapter",
                    "params:evaluate",
                    "params:train_qlora",
                    "params:model",
                ],
                outputs=["eval_predictions", "metrics"],
                name="evaluate_adapter",
            ),
        ]
    )
