"""A partial or corrupt last checkpoint is skipped, with a log line, and the one before is used;
the resumed run still ends with the uninterrupted run's adapter, tensor for tensor."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gemma_pipeline.config import ModelParams
from gemma_pipeline.training.checkpoints import checkpoint_problems, last_good_checkpoint
from gemma_pipeline.training.run import train_adapter


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


#: How the last checkpoint is damaged, and what the log must say about it.
DAMAGE = {
    "empty folder": (_empty, "trainer_state.json is missing"),
    "optimizer.pt missing": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    "truncated safetensors": (
        lambda c: _truncate(c / "adapter_model.safetensors"),
        "adapter_model.safetensors does not load",
    ),
    "garbage trainer_state.json": (
        lambda c: (c / "trainer_state.json").write_text("{'global_step': 4,"),
        "trainer_state.json does not parse",
    ),
    "truncated rng_state.pth": (
        lambda c: _truncate(c / "rng_state.pth"),
        "rng_state.pth does not load",
    ),
    "trainer_state.json of another step": (
        lambda c: (c / "trainer_state.json").write_text(json.dumps({"global_step": 2})),
        "trainer_state.json is at step 2",
    ),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir, tiny_tokenizer, make_rows, make_params):
    """A whole 4-step run (checkpoints 2 and 4): its parameters, checkpoints and adapter."""
    root = tmp_path_factory.mktemp("uninterrupted")
    params = make_params(root, max_steps=4)
    adapter, history = train_adapter(
        make_rows(tiny_tokenizer), params, ModelParams(name_or_path=str(tiny_model_dir))
    )
    adapter.save_pretrained(root / "adapter")
    return params, Path(history["checkpoint_dir"]), root / "adapter" / "adapter_model.safetensors"


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_last_checkpoint_is_skipped_with_the_reason(
    damage, uninterrupted, tmp_path, caplog
):
    _, checkpoints, _ = uninterrupted
    run_dir = tmp_path / checkpoints.name
    shutil.copytree(checkpoints, run_dir)
    harm, reason = DAMAGE[damage]
    harm(run_dir / "checkpoint-4")

    with caplog.at_level(logging.WARNING, logger="gemma_pipeline.training.checkpoints"):
        assert last_good_checkpoint(run_dir) == run_dir / "checkpoint-2"

    [message] = [record.getMessage() for record in caplog.records]
    assert message.startswith(f"Skipping checkpoint {run_dir / 'checkpoint-4'}: "), message
    assert reason in message, message
    assert not (run_dir / "checkpoint-4").exists()
    assert (run_dir / "skipped-checkpoint-4").is_dir()  # kept for inspection, out of the way


# The ways the issue names: a missing file, truncated safetensors, garbage JSON, an empty folder.
@pytest.mark.parametrize(
    "damage",
    ["optimizer.pt missing", "truncated safetensors", "garbage trainer_state.json", "empty folder"],
)
def test_resuming_past_a_damaged_checkpoint_ends_with_the_uninterrupted_adapter(
    damage, uninterrupted, tmp_path, tiny_model_dir, tiny_tokenizer, make_rows, caplog
):
    params, checkpoints, expected_adapter = uninterrupted
    run_dir = tmp_path / "checkpoints" / checkpoints.name
    shutil.copytree(checkpoints, run_dir)
    DAMAGE[damage][0](run_dir / "checkpoint-4")

    resumed = params.model_copy(
        update={"checkpoint_dir": str(tmp_path / "checkpoints"), "resume": True}
    )
    with caplog.at_level(logging.WARNING, logger="gemma_pipeline.training.checkpoints"):
        adapter, history = train_adapter(
            make_rows(tiny_tokenizer), resumed, ModelParams(name_or_path=str(tiny_model_dir))
        )

    assert history["resumed_from"] == str(run_dir / "checkpoint-2")
    assert any("Skipping checkpoint" in record.getMessage() for record in caplog.records)
    assert checkpoint_problems(run_dir / "checkpoint-4") == []  # this run wrote it anew
    adapter.save_pretrained(tmp_path / "resumed")
    expected = load_file(expected_adapter)
    got = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_every_damaged_checkpoint_is_skipped_back_to_a_whole_one(uninterrupted, tmp_path, caplog):
    _, checkpoints, _ = uninterrupted
    run_dir = tmp_path / checkpoints.name
    shutil.copytree(checkpoints, run_dir)
    shutil.copytree(run_dir / "checkpoint-4", run_dir / "checkpoint-6")
    shutil.copytree(run_dir / "checkpoint-4", run_dir / "checkpoint-8")
    (run_dir / "checkpoint-8" / "scheduler.pt").unlink()
    (run_dir / "checkpoint-4" / "scheduler.pt").write_bytes(b"\0" * 100)
    (run_dir / "skipped-checkpoint-4").mkdir()  # an earlier run's skipped one stays as it is

    with caplog.at_level(logging.WARNING, logger="gemma_pipeline.training.checkpoints"):
        assert last_good_checkpoint(run_dir) == run_dir / "checkpoint-2"

    reasons = dict(r.getMessage().split(": ", 1) for r in caplog.records)
    assert list(reasons) == [
        f"Skipping checkpoint {run_dir / name}"
        for name in ("checkpoint-8", "checkpoint-6", "checkpoint-4")
    ]
    assert reasons[f"Skipping checkpoint {run_dir / 'checkpoint-8'}"].startswith(
        "trainer_state.json is at step 4; scheduler.pt is missing."
    )
    # a copy of checkpoint-4 is not a checkpoint of step 6
    assert (
        "trainer_state.json is at step 4."
        in reasons[f"Skipping checkpoint {run_dir / 'checkpoint-6'}"]
    )
    assert (
        "scheduler.pt does not load" in reasons[f"Skipping checkpoint {run_dir / 'checkpoint-4'}"]
    )
    names = sorted(path.name for path in run_dir.iterdir() if path.is_dir())
    assert names == [
        "checkpoint-2",
        "skipped-checkpoint-4",
        "skipped-checkpoint-4.2",
        "skipped-checkpoint-6",
        "skipped-checkpoint-8",
    ]


def test_no_whole_checkpoint_means_no_resume(uninterrupted, tmp_path):
    _, checkpoints, _ = uninterrupted
    run_dir = tmp_path / checkpoints.name
    shutil.copytree(checkpoints, run_dir)
    for step in (2, 4):
        (run_dir / f"checkpoint-{step}" / "optimizer.pt").unlink()
    assert last_good_checkpoint(run_dir) is None
    assert last_good_checkpoint(tmp_path / "never-written") is None


def test_resuming_at_the_last_step_trains_no_step_more(
    tmp_path, tiny_model_dir, tiny_tokenizer, make_rows, make_params
):
    """Killed after its last checkpoint (saving the adapter, say), a run resumed there must hand
    back that checkpoint's adapter. transformers trains one step past ``max_steps`` when it
    resumes at ``max_steps`` in the middle of an epoch; a constant learning rate shows it."""
    rows = make_rows(tiny_tokenizer, n_questions=16)  # 64 rows: 8 steps an epoch, 4 run
    params = make_params(tmp_path, max_steps=4, lr_scheduler_type="constant")
    model_params = ModelParams(name_or_path=str(tiny_model_dir))
    whole, _ = train_adapter(rows, params, model_params)
    whole.save_pretrained(tmp_path / "whole")

    resumed, history = train_adapter(rows, params.model_copy(update={"resume": True}), model_params)

    assert history["resumed_from"].endswith("checkpoint-4")
    resumed.save_pretrained(tmp_path / "resumed")
    expected = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    got = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert history["global_steps"] == 4
    assert [name for name in expected if not torch.equal(got[name], expected[name])] == []
