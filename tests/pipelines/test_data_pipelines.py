"""The data pipelines chained on an in-memory catalog, each stage also run alone."""

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from gemma_pipeline.pipeline_registry import register_pipelines

INGEST = {
    "sample_seed": 0,
    "sources": {
        "mmlu": {"task": "mmlu", "loader": "sample", "sample": {"train": 16, "test": 8}},
        "mathqa": {"task": "mathqa", "loader": "sample", "sample": {"train": 16, "test": 8}},
    },
}
FORMAT = {
    "templates": {
        "mmlu": {"user": "About {subject}.\n{question}\n{options}"},
        "mathqa": {"user": "Solve.\n{question}\n{options}"},
    }
}


class KeptDataset(MemoryDataset):
    """A memory dataset the runner cannot release, so the test can read intermediate data."""

    def _release(self) -> None:
        pass


def _catalog(model_dir) -> DataCatalog:
    params = {
        "params:ingest": INGEST,
        "params:format_prompts": FORMAT,
        "params:tokenize": {"max_length": 256},
        "params:model": {"name_or_path": str(model_dir)},
    }
    # copy_mode="assign": no deep copies of what passes between nodes.
    datasets = {name: MemoryDataset(data, copy_mode="assign") for name, data in params.items()}
    for name in ["questions", "rejected_rows", "ingest_summary", "prompts", "tokenized"]:
        datasets[name] = KeptDataset(copy_mode="assign")
    return DataCatalog(datasets=datasets)


def test_ingest_to_tokenize_on_an_in_memory_catalog(tiny_tokenizer_dir):
    pipelines = register_pipelines()
    catalog = _catalog(tiny_tokenizer_dir)
    SequentialRunner().run(pipelines["data"], catalog)

    questions = catalog["questions"].load()
    prompts = catalog["prompts"].load()
    tokenized = catalog["tokenized"].load()
    assert len(questions) == len(prompts) == 48
    assert sorted(tokenized) == ["test", "train"]
    assert len(tokenized["train"]) == 32 and len(tokenized["test"]) == 16
    assert set(tokenized["train"]["row_id"]).isdisjoint(tokenized["test"]["row_id"])


def test_each_stage_runs_alone_from_the_previous_artifact(tiny_tokenizer_dir):
    pipelines = register_pipelines()
    catalog = _catalog(tiny_tokenizer_dir)
    SequentialRunner().run(pipelines["ingest"], catalog)
    SequentialRunner().run(pipelines["format_prompts"], catalog)
    SequentialRunner().run(pipelines["tokenize"], catalog)
    assert len(catalog["tokenized"].load()["test"]) == 16
    assert pipelines["tokenize"].inputs() == {"prompts", "params:tokenize", "params:model"}
