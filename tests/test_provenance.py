"""The run's metadata: data versions, git state and package versions, with or without git."""

from __future__ import annotations

from kedro.io import DataCatalog

from gemma_pipeline.provenance import git_state, run_metadata


def test_run_metadata_outside_git(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}
    catalog = DataCatalog.from_config(
        {
            "never_saved": {
                "type": "json.JSONDataset",
                "filepath": str(tmp_path / "x.json"),
                "versioned": True,
            },
            "plain": {"type": "json.JSONDataset", "filepath": str(tmp_path / "y.json")},
        }
    )
    catalog["params:model"] = {"name_or_path": "g"}
    metadata = run_metadata(
        catalog, save_version="v1", load_versions={"a": "v0"}, env="demo", project_path=tmp_path
    )
    assert metadata["dataset_versions"] == {"never_saved": None}
    assert metadata["load_versions"] == {"a": "v0"}
    assert metadata["env"] == "demo" and metadata["git"]["commit"] is None
    assert set(metadata["packages"]) >= {"torch", "transformers", "peft", "trl", "kedro", "wandb"}
    assert metadata["packages"]["kedro"]
