"""The Kedro project as a user meets it: registry, catalog and configuration environments."""

from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def contexts():
    bootstrap_project(PROJECT)
    loaded = {}
    for env in ("base", "demo"):
        with KedroSession.create(project_path=PROJECT, env=env) as session:
            loaded[env] = session.load_context()
    return loaded


def test_every_artifact_between_stages_is_a_versioned_catalog_entry(contexts):
    from gemma_pipeline.pipeline_registry import register_pipelines

    pipeline = register_pipelines()["__default__"]
    catalog = contexts["base"].catalog
    # run_metadata is supplied in memory by RunMetadataHook at run start, so it has no entry.
    artifacts = {name for name in pipeline.datasets() if not name.startswith("params:")} - {
        "run_metadata"
    }
    config = contexts["base"].config_loader["catalog"]
    assert artifacts <= set(config), artifacts - set(config)
    assert all(config[name].get("versioned") for name in artifacts)
    assert all(name in catalog for name in artifacts)


def test_base_is_the_real_job_and_demo_only_overrides(contexts):
    base = contexts["base"].params
    demo = contexts["demo"].params
    assert base["model"]["name_or_path"] == "google/gemma-2-2b-it"
    assert base["ingest"]["sources"]["mmlu"]["hub"]["splits"]["train"]["name"] == "auxiliary_train"
    assert demo["model"]["name_or_path"] == "embedded:gemma3-270m"
    assert demo["ingest"]["sources"]["mmlu"]["loader"] == "sample"
    # Soft merge: what demo does not override still comes from base.
    assert demo["tokenize"] == base["tokenize"]
    assert demo["model"]["revision"] == base["model"]["revision"]
    # Gemma 2 soft-caps its attention (eager keeps the cap); the embedded Gemma 3 does not.
    assert base["model"]["attn_implementation"] == "eager"
    assert demo["model"]["attn_implementation"] == "sdpa"


@pytest.mark.parametrize("env", ["base", "demo"])
def test_every_parameters_section_validates(contexts, env):
    from gemma_pipeline.config import validate_all

    validate_all(contexts[env].params)


def test_a_bad_parameter_fails_when_the_context_is_created(tmp_path):
    from gemma_pipeline.config import ParameterError

    with (
        KedroSession.create(
            project_path=PROJECT, env="demo", runtime_params={"tokenize": {"max_length": 1}}
        ) as session,
        pytest.raises(ParameterError, match=r"tokenize\.max_length"),
    ):
        session.load_context()
