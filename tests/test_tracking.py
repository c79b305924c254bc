"""W&B: key and mode resolution, what is logged, and the tracking hooks (no network)."""

from __future__ import annotations

import copy
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
from gemma_pipeline.redaction import REDACTED
from gemma_pipeline.tracking import (
    api_key_from,
    flatten_benchmark_metrics,
    flatten_heldout_metrics,
    resolve_mode,
    train_summary,
)

SECRET = "wandb-secret-test-key-123"
DATA = Path(__file__).parent / "reporting" / "data"
RUN_ID = "2026-03-04T05.06.07.890Z"


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def _record(
    task: str,
    shots: int | None,
    style: str,
    model: str,
    metric: str,
    value: float | None,
    stderr: float | None,
    n: int | None,
    level: str = "task",
    group: str | None = None,
) -> dict[str, Any]:
    return {
        "task": task,
        "shots": shots,
        "style": style,
        "model": model,
        "metric": metric,
        "level": level,
        "group": group,
        "value": value,
        "stderr": stderr,
        "n": n,
    }


# A benchmark_metrics.json in the records layout: every level, a null value, a null stderr,
# an lm-eval task with its default shots.
MMLU_BASE = _record("mmlu", 0, "plain", "base", "acc", 0.25, 0.043, 100)
MMLU_TUNED = _record("mmlu", 0, "plain", "finetuned", "acc", 0.55, 0.05, 100)
STEM_BASE = _record("mmlu", 0, "plain", "base", "acc", 0.2, 0.05, 60, "category", "stem")
STEM_TUNED = _record("mmlu", 0, "plain", "finetuned", "acc", 0.5, 0.06, 60, "category", "stem")
ANATOMY_BASE = _record("mmlu", 0, "plain", "base", "acc", 0.3, 0.1, 10, "subject", "anatomy")
ANATOMY_TUNED = _record("mmlu", 0, "plain", "finetuned", "acc", 0.6, None, 10, "subject", "anatomy")
GSM8K_BASE = _record("gsm8k", 5, "chat", "base", "exact_match,strict-match", 0.05, 0.05, 20)
GSM8K_TUNED = _record("gsm8k", 5, "chat", "finetuned", "exact_match,strict-match", None, None, 20)
ARC_BASE = _record("arc_easy", None, "lm-eval", "base", "acc,none", 0.31, 0.02, None)
ARC_TUNED = _record("arc_easy", None, "lm-eval", "finetuned", "acc,none", 0.36, 0.021, None)
BENCHMARK_METRICS = {
    "base_model": "embedded:gemma3-270m",
    "adapter": "data/06_models/adapter/x/adapter",
    "prompt_styles": {"plain": "lm-eval's own prompt text", "chat": "the training templates"},
    "runs": [
        {"task": "mmlu", "shots": 0, "style": "plain"},
        {"task": "gsm8k", "shots": 5, "style": "chat"},
        {"task": "arc_easy", "shots": None, "style": "lm-eval"},
    ],
    "records": [
        MMLU_BASE,
        STEM_BASE,
        ANATOMY_BASE,
        MMLU_TUNED,
        STEM_TUNED,
        ANATOMY_TUNED,
        GSM8K_BASE,
        GSM8K_TUNED,
        ARC_BASE,
        ARC_TUNED,
    ],
}
# What W&B should get for it, key by key, with the values read off the records.
BENCHMARK_SCALARS = {
    "benchmark/mmlu/0-shot/plain/acc/base": MMLU_BASE["value"],
    "benchmark/mmlu/0-shot/plain/acc/base_stderr": MMLU_BASE["stderr"],
    "benchmark/mmlu/0-shot/plain/acc/finetuned": MMLU_TUNED["value"],
    "benchmark/mmlu/0-shot/plain/acc/finetuned_stderr": MMLU_TUNED["stderr"],
    "benchmark/mmlu/0-shot/plain/acc/category/stem/base": STEM_BASE["value"],
    "benchmark/mmlu/0-shot/plain/acc/category/stem/base_stderr": STEM_BASE["stderr"],
    "benchmark/mmlu/0-shot/plain/acc/category/stem/finetuned": STEM_TUNED["value"],
    "benchmark/mmlu/0-shot/plain/acc/category/stem/finetuned_stderr": STEM_TUNED["stderr"],
    "benchmark/mmlu/0-shot/plain/acc/subject/anatomy/base": ANATOMY_BASE["value"],
    "benchmark/mmlu/0-shot/plain/acc/subject/anatomy/base_stderr": ANATOMY_BASE["stderr"],
    "benchmark/mmlu/0-shot/plain/acc/subject/anatomy/finetuned": ANATOMY_TUNED["value"],
    "benchmark/gsm8k/5-shot/chat/exact_match,strict-match/base": GSM8K_BASE["value"],
    "benchmark/gsm8k/5-shot/chat/exact_match,strict-match/base_stderr": GSM8K_BASE["stderr"],
    "benchmark/arc_easy/default-shot/lm-eval/acc,none/base": ARC_BASE["value"],
    "benchmark/arc_easy/default-shot/lm-eval/acc,none/base_stderr": ARC_BASE["stderr"],
    "benchmark/arc_easy/default-shot/lm-eval/acc,none/finetuned": ARC_TUNED["value"],
    "benchmark/arc_easy/default-shot/lm-eval/acc,none/finetuned_stderr": ARC_TUNED["stderr"],
}


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
    flat = flatten_heldout_metrics(_load("heldout_metrics"))
    assert flat["heldout/mmlu/letter_acc/finetuned"] == 0.5
    assert flat["heldout/mmlu/letter_acc/change_se"] == 0.06
    assert flat["heldout/mmlu/letter_spread/base/max_share"] == 0.9
    assert flat["heldout/mathqa/n"] == 1.0
    assert "heldout/mmlu/option_acc_norm/finetuned" not in flat  # null
    assert not any("lm_eval" in key or "hellaswag" in key for key in flat)
    assert flatten_heldout_metrics({"tasks": None}) == {}
    summary = train_summary(_load("train_metrics"))
    assert summary["train/final_train_loss"] == 1.2345
    assert summary["train/trainable_parameters"] == 10383360.0
    assert "train/log_history" not in summary


def test_benchmark_records_are_flattened_one_scalar_per_value_and_stderr():
    # Exactly these keys: the two null values and the null stderr give none.
    assert flatten_benchmark_metrics(BENCHMARK_METRICS) == BENCHMARK_SCALARS


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"runs": ["mmlu|5-shot|plain"], "models": {}}, "no 'records' list"),
        ({"records": [{**STEM_BASE, "group": "a/b"}]}, r"records\[0\]\.group='a/b'"),
        ({"records": [{**MMLU_BASE, "group": "stem"}]}, r"records\[0\]\.group='stem' at level"),
        ({"records": [{**MMLU_BASE, "value": "0.25"}]}, r"records\[0\]\.value='0.25' is not"),
        ({"records": [{**MMLU_BASE, "shots": "5"}]}, r"records\[0\]\.shots='5'"),
        (
            {"records": [MMLU_BASE, dict(MMLU_BASE)]},
            r"records\[1\] has the same W&B key as .*\[0\]",
        ),
    ],
)
def test_a_benchmark_record_that_gives_no_unambiguous_key_is_named(payload, error):
    with pytest.raises(ValueError, match=error):
        flatten_benchmark_metrics(payload)


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
    return _load("heldout_metrics")


def _fake_benchmark() -> dict[str, Any]:
    return copy.deepcopy(BENCHMARK_METRICS)


def _pipeline() -> Pipeline:
    return (
        Pipeline(
            [
                Node(_fake_train, None, "train_metrics", name="train_qlora"),
                Node(_fake_evaluate, None, "heldout_metrics", name="evaluate_adapter"),
                Node(_fake_benchmark, None, "benchmark_metrics", name="evaluate_benchmarks"),
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
    catalog["benchmark_rejected_rows"] = pd.DataFrame({"reason": []})
    catalog["export_checks"] = _load("export_checks")
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
    assert any(entry.get("heldout/mmlu/letter_acc/finetuned") == 0.5 for entry in run.logged)
    logged_benchmark = {
        key: value
        for entry in run.logged
        for key, value in entry.items()
        if key.startswith("benchmark/")
    }
    assert logged_benchmark == BENCHMARK_SCALARS
    assert (
        run.summary["benchmark/mmlu/0-shot/plain/acc/category/stem/finetuned"]
        == (STEM_TUNED["value"])
    )
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
    for key in (
        b"heldout/mmlu/letter_acc/finetuned",
        b"benchmark/mmlu/0-shot/plain/acc/subject/anatomy/finetuned",
        b"train/final_train_loss",
        b"report",
    ):
        assert key in logged

    report = catalog.load("report_md") + catalog.load("report_html")
    assert "Tracked run" in report
    needle = SECRET.encode()
    leaks = [path for path in tmp_path.rglob("*") if path.is_file() and needle in path.read_bytes()]
    assert leaks == []
    assert SECRET not in report
    assert SECRET not in caplog.text
    assert SECRET not in captured.out and SECRET not in captured.err
