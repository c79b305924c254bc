"""Wiring of the summarize pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import summarize_benchmark_predictions, summarize_heldout_predictions


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=summarize_heldout_predictions,
                inputs="heldout_predictions",
                outputs="heldout_metrics",
                name="summarize_heldout",
            ),
            Node(
                func=summarize_benchmark_predictions,
                inputs=["benchmark_predictions", "lm_eval_results"],
                outputs="benchmark_metrics",
                name="summarize_benchmarks",
            ),
        ]
    )
