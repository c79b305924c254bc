"""Wiring of the report pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_report


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=build_report,
                inputs=[
                    "heldout_metrics",
                    "benchmark_metrics",
                    "benchmark_rejected_rows",
                    "export_checks",
                    "train_metrics",
                    "ingest_summary",
                    "run_metadata",  # put in the catalog by RunMetadataHook, not catalog.yml
                    "params:report",
                    "params:model",
                    "params:train_qlora",
                    "params:evaluate",
                ],
                outputs=["report_md", "report_html", "per_subject_plot"],
                name="build_report",
            ),
        ]
    )
