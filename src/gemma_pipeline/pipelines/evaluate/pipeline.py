"""Wiring of the evaluate pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_adapter, evaluate_benchmarks


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
            Node(
                func=evaluate_benchmarks,
                inputs=[
                    "benchmark_questions",
                    "adapter",
                    "params:evaluate",
                    "params:train_qlora",
                    "params:model",
                    "params:format_prompts",
                ],
                outputs=["benchmark_predictions", "benchmark_metrics"],
                name="evaluate_benchmarks",
            ),
        ]
    )
