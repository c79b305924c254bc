"""The Hub push: fails before any work when it could not happen, never pushes in tests."""

from __future__ import annotations

import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline

from gemma_pipeline.config import HubPushParams
from gemma_pipeline.export.hub import HubPushError, preflight, push_export, token_from
from gemma_pipeline.hooks import HubPushHook
from gemma_pipeline.pipelines.export import create_pipeline

PUSH = HubPushParams(repo_id="someone/tiny-ft", private=True)


def test_offline_the_push_fails_saying_why(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE is on"):
        preflight(PUSH, "hf_token")


def test_without_a_token_the_push_fails_saying_where_to_put_one(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubPushError, match=r"credentials\.yml"):
        preflight(PUSH, token_from({}))


def test_no_push_configured_needs_nothing(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preflight(None, None)


def test_the_token_comes_from_credentials_before_the_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "from-env")
    assert token_from({"huggingface": {"token": "from-credentials"}}) == "from-credentials"
    assert token_from({}) == "from-env"
    monkeypatch.delenv("HF_TOKEN")
    assert token_from(None) is None


def test_failed_checks_are_never_published(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubPushError, match="checks failed"):
        push_export(
            PUSH,
            "hf_token",
            merged_dir=tmp_path,
            gguf_dir=tmp_path,
            export_checks={"passed": False},
        )


def test_the_hook_stops_the_run_before_any_node(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    catalog = DataCatalog()
    catalog["params:export"] = {
        "name": "tiny",
        "checks": {"prompts": ["hi"]},
        "push_to_hub": {"repo_id": "someone/tiny-ft"},
    }
    hook = HubPushHook()
    with pytest.raises(HubPushError, match="someone/tiny-ft"):
        hook.before_pipeline_run(pipeline=create_pipeline(), catalog=catalog)
    # A run without the push node is not concerned.
    hook.before_pipeline_run(pipeline=Pipeline([]), catalog=catalog)


def test_kedro_run_with_a_push_fails_offline_before_any_node(monkeypatch):
    """`kedro run --pipeline export` with export.push_to_hub set, offline: nothing runs."""
    from pathlib import Path

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = Path(__file__).resolve().parents[2]
    bootstrap_project(project)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    ran = []
    monkeypatch.setattr(
        "gemma_pipeline.pipelines.export.nodes.merged_in_memory",
        lambda *args, **kwargs: ran.append("merge"),
    )
    push = {"export": {"push_to_hub": {"repo_id": "someone/tiny-ft", "private": True}}}
    with (
        KedroSession.create(project_path=project, env="demo", runtime_params=push) as session,
        pytest.raises(HubPushError, match="HF_HUB_OFFLINE is on"),
    ):
        session.run(pipeline_names=["export"])
    assert ran == []
