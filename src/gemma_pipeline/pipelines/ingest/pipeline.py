"""Wiring of the ingest pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import ingest_benchmarks, ingest_sources


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=ingest_sources,
                inputs="params:ingest",
                outputs=["questions", "rejected_rows", "ingest_summary"],
                name="ingest_sources",
            ),
            Node(
                func=ingest_benchmarks,
                inputs="params:ingest",
                outputs=["benchmark_questions", "benchmark_rejected_rows"],
                name="ingest_benchmarks",
            ),
        ]
    )
