"""Redaction, W&B mode resolution, run metadata and the tracking hooks (no network)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner

from gemma_pipeline.hooks import RunMetadataHook, WandbTrackingHook
from gemma_pipeline.pipelines.report import create_pipeline as create_report_pipeline
from gemma_pipeline.tracking import (
    REDACTED,
    api_key_from,
    flatten_eval_metrics,
    git_state,
    redact,
    resolve_mode,
    run_metadata,
    train_summary,
)

SECRET = "wandb-secret-test-key-123"
DATA = Path(__file__).parent / "reporting" / "data"
RUN_ID = "2026-03-04T05.06.07.890Z"


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def wandb_home(tmp_path, monkeypatch):
    """W&B's own folders (cache, logs, artifact staging, settings) inside the test's tmp dir."""
    import wandb

    home = tmp_path / "wandb-home"
    for variable, folder in (
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        monkeypatch.setenv(variable, str(home / folder))
    wandb.teardown()  # the settings singleton reads those variables once
    yield home
    wandb.teardown()


# --- pure helpers -----------------------------------------------------------------------------


def test_redact_replaces_credentials_at_any_depth_and_keeps_the_rest():
    params = {
        "API_KEY": SECRET,
        "model": {"name_or_path": "g", "hubToken": SECRET, "dtype": "bfloat16"},
        "sources": [{"password": SECRET, "path": "x"}, {"client_secret": [SECRET, SECRET]}],
        # A section whose name contains "token" keeps its numbers; its strings are redacted.
        "tokenize": {"max_length": 512, "padding_side": "right"},
        "hf_token": {"value": SECRET},
        "url": f"https://user:{SECRET}@example.com",
    }
    redacted = redact(params, secrets=[SECRET])
    assert redacted == {
        "API_KEY": REDACTED,
        "model": {"name_or_path": "g", "hubToken": REDACTED, "dtype": "bfloat16"},
        "sources": [{"password": REDACTED, "path": "x"}, {"client_secret": REDACTED}],
        "tokenize": {"max_length": 512, "padding_side": REDACTED},
        "hf_token": {"value": REDACTED},
        "url": f"https://user:{REDACTED}@example.com",
    }
    assert params["API_KEY"] == SECRET  # a copy: the input is untouched
    # Names that are not parameters (dataset names such as "tokenized") keep their values.
    assert redact({"tokenized": "v1", "x": SECRET}, [SECRET], by_name=False) == {
        "tokenized": "v1",
        "x": REDACTED,
    }


@pytest.mark.parametrize(
    ("param", "env", "has_key", "expected"),
    [
        ("offline", None, True, "offline"),
        ("online", None, False, "online"),
        ("disabled", "", True, "disabled"),
        ("auto", None, True, "online"),
        ("auto", None, False, "offline"),
        ("online", "disabled", True, "disabled"),  # the environment wins
        ("disabled", "offline", False, "offline"),
        ("offline", "dryrun", False, "offline"),
        ("offline", "ONLINE", False, "online"),
        ("offline", "auto", True, "online"),
    ],
)
def test_resolve_mode(param, env, has_key, expected):
    assert resolve_mode(param, env, has_key) == expected


@pytest.mark.parametrize(("param", "env"), [("offline", "sometimes"), ("live", None)])
def test_resolve_mode_rejects_unknown_modes(param, env):
    with pytest.raises(ValueError, match="not"):
        resolve_mode(param, env, False)


def test_api_key_comes_from_credentials_then_environment():
    env = {"WANDB_API_KEY": "from-env"}
    assert api_key_from({"wandb": {"api_key": "from-file"}}, env) == "from-file"
    assert api_key_from({"wandb": {"api_key": None}}, env) == "from-env"
    assert api_key_from({"other": {}}, env) == "from-env"
    assert api_key_from({}, {}) is None
    assert api_key_from({"wandb": "not-a-section"}, {"WANDB_API_KEY": " "}) is None


def test_metrics_are_flattened_for_wandb():
    flat = flatten_eval_metrics(_load("metrics"))
    assert flat["eval/mmlu/letter_acc/finetuned"] == 0.5
    assert flat["eval/mmlu/letter_acc/change_se"] == 0.06
    assert flat["eval/mmlu/letter_spread/base/max_share"] == 0.9
    assert flat["eval/mathqa/n"] == 1.0
    assert "eval/mmlu/option_acc_norm/finetuned" not in flat  # null
    assert not any("lm_eval" in key or "hellaswag" in key for key in flat)
    assert flatten_eval_metrics({"tasks": None}) == {}
    summary = train_summary(_load("train_metrics"))
    assert summary["train/final_train_loss"] == 1.2345
    assert summary["train/trainable_parameters"] == 10383360.0
    assert "train/log_history" not in summary


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


# --- the hooks --------------------------------------------------------------------------------


def _context(project: Path, credentials: dict | None = None) -> SimpleNamespace:
    loader = {"credentials": credentials} if credentials is not None else {}
    return SimpleNamespace(env="local", project_path=project, config_loader=loader)


def _params(mode: str = "offline") -> dict[str, Any]:
    return {
        "tracking": {
            "project": "gemma-test",
            "entity": None,
            "mode": mode,
            "log_model": False,
            "dir": "data/09_tracking",
        },
        "report": {"title": "Tracked run"},
        "model": {"name_or_path": "g"},
        "train_qlora": {"lora": {"r": 8}},
        "evaluate": {"split": "test"},
        "tokenize": {"max_length": 512},
        "extra": {"api_key": SECRET, "note": f"copied by mistake: {SECRET}"},
    }


def _fake_train() -> dict[str, Any]:
    return _load("train_metrics")


def _fake_evaluate() -> dict[str, Any]:
    return _load("metrics")


def _pipeline() -> Pipeline:
    return (
        Pipeline(
            [
                Node(_fake_train, None, "train_metrics", name="train_qlora"),
                Node(_fake_evaluate, None, "metrics", name="evaluate_adapter"),
            ]
        )
        + create_report_pipeline()
    )


def _catalog(params: dict[str, Any]) -> DataCatalog:
    catalog = DataCatalog()
    catalog["parameters"] = params
    for section, values in params.items():
        catalog[f"params:{section}"] = values
    catalog["ingest_summary"] = _load("ingest_summary")
    catalog["benchmark_metrics"] = _load("benchmark_metrics")
    catalog["benchmark_rejected_rows"] = pd.DataFrame({"reason": []})
    return catalog


def _run(project: Path, params: dict[str, Any], credentials: dict | None) -> DataCatalog:
    """What a KedroSession does around a run, with the project's two hooks registered."""
    manager = _create_hook_manager()
    for hook in (RunMetadataHook(), WandbTrackingHook()):
        manager.register(hook)
    catalog, pipeline = _catalog(params), _pipeline()
    run_params = {
        "run_id": RUN_ID,
        "project_path": str(project),
        "env": "local",
        "pipeline_names": ["fake"],
        "load_versions": {},
    }
    manager.hook.after_context_created(context=_context(project, credentials))
    manager.hook.after_catalog_created(
        catalog=catalog,
        conf_catalog={},
        conf_creds={},
        parameters=params,
        save_version=RUN_ID,
        load_versions={},
    )
    manager.hook.before_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)
    SequentialRunner().run(pipeline, catalog, manager, run_id=RUN_ID)
    manager.hook.after_pipeline_run(
        run_params=run_params, run_result={}, pipeline=pipeline, catalog=catalog
    )
    return catalog


def test_disabled_tracking_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    catalog = _run(tmp_path, _params("online"), {"wandb": {"api_key": SECRET}})
    assert "Tracked run" in catalog.load("report_md")
    assert list(tmp_path.iterdir()) == []  # neither data/09_tracking nor W&B's own folders


class _FakeRun:
    id = "fake"

    def __init__(self, **kwargs: Any) -> None:
        self.init_kwargs, self.logged, self.summary, self.exit_code = kwargs, [], {}, None

    def log(self, data: dict[str, Any]) -> None:
        self.logged.append(data)

    def log_artifact(self, artifact: Any) -> None:
        self.logged.append({"artifact": artifact.name})

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code


def test_online_run_gets_the_key_only_through_settings(tmp_path, monkeypatch):
    import wandb

    runs: list[_FakeRun] = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: runs.append(_FakeRun(**kwargs)) or runs[-1])
    monkeypatch.setenv("WANDB_MODE", "online")
    _run(tmp_path, _params("auto"), {"wandb": {"api_key": SECRET}})

    (run,) = runs
    assert run.init_kwargs["mode"] == "online"
    assert run.init_kwargs["settings"].api_key == SECRET
    assert run.init_kwargs["name"] == RUN_ID
    config = run.init_kwargs["config"]
    assert SECRET not in json.dumps(config, default=str)
    assert config["extra"] == {"api_key": REDACTED, "note": f"copied by mistake: {REDACTED}"}
    assert config["tokenize"] == {"max_length": 512}
    assert config["tracking"]["project"] == "gemma-test"
    assert config["kedro"]["dataset_versions"] == {}
    assert run.summary["train/final_train_loss"] == 1.2345
    assert any(entry.get("eval/mmlu/letter_acc/finetuned") == 0.5 for entry in run.logged)
    assert any("report" in entry for entry in run.logged)
    assert run.exit_code == 0


def test_a_failing_wandb_is_a_warning_not_a_failed_run(tmp_path, monkeypatch, caplog):
    import wandb

    def refuse(**kwargs: Any) -> None:
        raise ConnectionError(f"api.wandb.ai unreachable (key {SECRET})")

    monkeypatch.setattr(wandb, "init", refuse)
    monkeypatch.setenv("WANDB_MODE", "online")
    with caplog.at_level(logging.WARNING):
        catalog = _run(tmp_path, _params(), {"wandb": {"api_key": SECRET}})
    assert "Tracked run" in catalog.load("report_md")
    assert "W&B tracking is off" in caplog.text and "unreachable" in caplog.text
    assert SECRET not in caplog.text


def test_an_error_finishes_the_run_as_failed(tmp_path, monkeypatch):
    import wandb

    runs: list[_FakeRun] = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: runs.append(_FakeRun(**kwargs)) or runs[-1])
    monkeypatch.setenv("WANDB_MODE", "offline")
    hook = WandbTrackingHook()
    hook.after_context_created(_context(tmp_path))
    catalog = _catalog(_params())
    hook.before_pipeline_run(
        {"run_id": RUN_ID, "project_path": str(tmp_path)}, _pipeline(), catalog
    )
    hook.on_pipeline_error()
    assert runs[0].exit_code == 1
    assert runs[0].init_kwargs["settings"].api_key is None  # offline needs no key


def test_the_secret_appears_in_no_artifact_log_or_output(
    tmp_path, monkeypatch, wandb_home, caplog, capfd
):
    import wandb

    project = tmp_path / "project"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    with caplog.at_level(logging.DEBUG):
        catalog = _run(project, _params(), {"wandb": {"api_key": SECRET}})
    # The W&B service writes the run's records asynchronously: stop it so every file is
    # complete before it is searched (a kedro run gets the same from wandb's exit handler).
    wandb.teardown()
    captured = capfd.readouterr()

    runs = list((project / "data/09_tracking/wandb").glob("offline-run-*"))
    assert len(runs) == 1, "an offline W&B run was written under tracking.dir"
    (record,) = runs[0].glob("*.wandb")
    logged = record.read_bytes()
    for key in (b"eval/mmlu/letter_acc/finetuned", b"train/final_train_loss", b"report"):
        assert key in logged

    report = catalog.load("report_md") + catalog.load("report_html")
    assert "Tracked run" in report
    needle = SECRET.encode()
    leaks = [path for path in tmp_path.rglob("*") if path.is_file() and needle in path.read_bytes()]
    assert leaks == []
    assert SECRET not in report
    assert SECRET not in caplog.text
    assert SECRET not in captured.out and SECRET not in captured.err
