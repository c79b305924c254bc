"""Wiring of the evaluate pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import score_benchmarks, score_heldout_questions


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=score_heldout_questions,
                inputs=[
                    "prompts",
                    "adapter",
                    "params:evaluate",
                    "params:train_qlora",
                    "params:model",
                ],
                outputs="heldout_predictions",
                name="score_heldout",
            ),
            Node(
                func=score_benchmarks,
                inputs=[
                    "benchmark_questions",
                    "adapter",
                    "params:evaluate",
                    "params:train_qlora",
                    "params:model",
                    "params:format_prompts",
                ],
                outputs=["benchmark_predictions", "lm_eval_results"],
                name="score_benchmarks",
            ),
        ]
    )
