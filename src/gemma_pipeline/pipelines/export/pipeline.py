"""Wiring of the export pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import check_export_files, convert_to_gguf, merge_adapter, push_to_hub, write_model_card


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=merge_adapter,
                inputs=["adapter", "params:export", "params:model"],
                outputs="merged_model",
                name="merge_adapter",
            ),
            Node(
                func=convert_to_gguf,
                inputs=["merged_model", "params:export"],
                outputs="gguf_files",
                name="convert_to_gguf",
            ),
            Node(
                func=check_export_files,
                inputs=[
                    "merged_model",
                    "gguf_files",
                    "adapter",
                    "prompts",
                    "params:export",
                    "params:model",
                    "params:evaluate",
                    "params:train_qlora",
                ],
                outputs="export_checks",
                name="check_exports",
            ),
            Node(
                func=write_model_card,
                inputs=[
                    "export_checks",
                    "gguf_files",
                    "heldout_metrics",
                    "benchmark_metrics",
                    "run_metadata",  # put in the catalog by RunMetadataHook, not catalog.yml
                    "params:export",
                    "params:model",
                    "params:ingest",
                    "params:train_qlora",
                    "params:report",
                ],
                outputs=["model_card", "merged_model_card"],
                name="write_model_card",
            ),
            Node(
                func=push_to_hub,
                inputs=[
                    "merged_model_card",
                    "merged_model",
                    "gguf_files",
                    "export_checks",
                    "params:export",
                ],
                outputs="hub_push",
                name="push_to_hub",
            ),
        ]
    )
