"""Wiring of the train_qlora pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import train_qlora


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=train_qlora,
                inputs=["tokenized", "params:train_qlora", "params:model"],
                outputs=["adapter", "train_metrics", "loss_curve"],
                name="train_qlora",
            ),
        ]
    )
