"""Issue 15: a `kedro run` launched as several processes is one run.

A real launch (torchrun, 2 gloo processes, the tiny Gemma-3) of the training pipeline: rank 0
writes one set of artifacts and the one W&B run, rank 1 writes nothing, and the adapter is the
one a single process trains on the same global batch. Then the glue itself: what a rank > 0
runs, what it keeps in memory, and the runs a launch refuses.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from safetensors.torch import load_file

from gemma_pipeline.hooks import DataParallelHook
from gemma_pipeline.inference.project import Project
from gemma_pipeline.pipeline_registry import register_pipelines
from gemma_pipeline.training.run import train_adapter


def launch_kedro_run(root, tmp_path, launch, pipeline: str) -> Project:
    """`kedro run --env tiny --pipeline <pipeline>` as 2 processes; checks that it is one run:
    one version of each dataset it writes, one W&B run, no write at all by rank 1."""
    tiny = root / "conf" / "tiny" / "parameters_tiny.yml"
    params = yaml.safe_load(tiny.read_text())
    params["tracking"] = {"mode": "offline"}  # W&B writes its run's files: rank 0 alone must
    tiny.write_text(yaml.safe_dump(params))
    env = {key: value for key, value in os.environ.items() if key != "WANDB_MODE"}
    audit = tmp_path / "audit"
    audit.mkdir()
    command = ["kedro", "run", "--env", "tiny", "--pipeline", pipeline]
    result = launch(2, [str(audit), str(root), *command], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-4000:]

    project = Project.load(root, "tiny")
    versioned = {name for name, entry in project.catalog_config.items() if entry.get("versioned")}
    written = {name for name in versioned if project.versions(name)}
    assert written == versioned & register_pipelines()[pipeline].all_outputs()
    assert {name: len(project.versions(name)) for name in written} == dict.fromkeys(written, 1)
    wandb_runs = list((root / "data" / "09_tracking" / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1, wandb_runs
    writes = {rank: json.loads((audit / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    assert writes[1] == []
    assert any("/data/06_models/adapter/" in write for write in writes[0])
    metrics = project.artifact("train_metrics")
    assert metrics["setup"]["processes"] == 2
    # conf/demo's 8 examples a step: 4 on each process
    assert (metrics["setup"]["micro_batch"], metrics["setup"]["gradient_accumulation_steps"]) == (
        4,
        1,
    )
    return project


def test_a_kedro_run_launched_as_two_processes_is_one_run(
    tiny_project_files, tmp_path, data_parallel_launch
):
    root = tiny_project_files(tmp_path / "project")
    project = launch_kedro_run(root, tmp_path, data_parallel_launch, "training")
    one, _ = train_adapter(
        project.artifact("tokenized")["train"],
        project.params("train_qlora").model_copy(
            update={"checkpoint_dir": str(tmp_path / "one-process")}
        ),
        project.params("model"),
    )
    one.save_pretrained(tmp_path / "one")
    expected = load_file(tmp_path / "one" / "adapter_model.safetensors")
    got = load_file(f"{project.artifact('adapter')}/adapter_model.safetensors")
    difference = max((got[name] - expected[name]).abs().max().item() for name in expected)
    print(f"max abs difference of the adapters, 2 processes vs 1: {difference:.3g}")
    assert difference <= 1e-6


@pytest.mark.slow
def test_the_whole_default_run_launched_as_two_processes_is_one_run(
    tiny_project_files, tmp_path, data_parallel_launch
):
    # Rank 1 stops after training; rank 0 goes on to evaluate, export and report alone.
    root = tiny_project_files(tmp_path / "project")
    project = launch_kedro_run(root, tmp_path, data_parallel_launch, "__default__")
    assert project.artifact("report_md").startswith("#")


def _node(name: str, inputs: list[str], outputs: list[str]) -> Node:
    return Node(lambda *args: [None] * len(outputs), inputs, outputs, name=name)


def test_a_rank_above_0_runs_training_and_what_it_needs_only(monkeypatch):
    full = register_pipelines()
    monkeypatch.setenv("RANK", "1")
    share = register_pipelines()
    # What the training node needs, and not the benchmarks' ingest, evaluation or the report.
    needed = {"ingest_sources", "format_prompts", "tokenize_prompts", "train_qlora"}
    assert {node.name for node in share["__default__"].nodes} == needed
    assert {node.name for node in share["training"].nodes} == needed
    assert {node.name for node in share["train_qlora"].nodes} == {"train_qlora"}
    assert share["evaluation"].nodes == full["evaluation"].nodes  # refused, below


def test_a_rank_above_0_keeps_its_outputs_in_memory(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    pipeline = Pipeline(
        [
            _node("tokenize", ["prompts"], ["tokenized"]),
            _node("train_qlora", ["tokenized"], ["adapter", "train_metrics"]),
        ]
    )
    catalog = DataCatalog.from_config(
        {
            name: {"type": "json.JSONDataset", "filepath": str(tmp_path / f"{name}.json")}
            for name in ("prompts", "tokenized", "adapter", "train_metrics")
        }
    )
    DataParallelHook().before_pipeline_run(pipeline, catalog)
    for name in ("tokenized", "adapter", "train_metrics"):
        assert isinstance(catalog.get(name), MemoryDataset), name
        catalog.save(name, {"saved": name})
        assert catalog.load(name) == {"saved": name}
    assert not isinstance(catalog.get("prompts"), MemoryDataset)  # an input: read from disk
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_launch_of_a_run_that_does_not_train_is_refused(monkeypatch, rank):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    evaluation = Pipeline([_node("evaluate", ["adapter"], ["predictions"])])
    with pytest.raises(ValueError, match="launched as 2 processes but has no train_qlora node"):
        DataParallelHook().before_pipeline_run(evaluation, DataCatalog())
