"""A real `kedro run`, in a child process that a test SIGKILLs (tests/training/test_killed_run.py).

It says what it is doing, one line per event in the file ``config["events"]`` (monotonic clock,
so the parent can time its kills), and it can stop half-way through one real write and wait to
be killed there: ``config["pause"]`` is

- ``"checkpoint:<step>"``: in the middle of ``optimizer.pt`` of ``checkpoint-<step>`` (half of
  the bytes written; the scheduler, RNG and trainer state not yet),
- ``"adapter"``: in the middle of ``adapter_model.safetensors`` of the catalog's adapter,
- ``"train_metrics"``: in the middle of the catalog's ``train_metrics.json``.

Everything is patched in this process only; the project's code has no test hook. Run as
``python killable_run.py <config.json>``, or in a forkserver child through ``runpy.run_path``
with ``init_globals={"CHILD_CONFIG": config}``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from pathlib import Path

STALL_SECONDS = 300  # the parent kills long before; never linger if it does not


def main(config: dict) -> None:
    os.chdir(config["project"])
    log = os.open(config["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    events = open(config["events"], "a", buffering=1)  # noqa: SIM115 (lives as long as we do)

    def event(text: str) -> None:
        events.write(f"{time.monotonic():.4f} {text}\n")
        events.flush()

    def stall(text: str) -> None:
        event(f"paused {text}")
        time.sleep(STALL_SECONDS)
        os._exit(99)

    def write_half(path: str | Path, data: bytes, what: str) -> None:
        with open(path, "wb") as file:
            file.write(data[: len(data) // 2])
        stall(f"{what} ({len(data) // 2} of {len(data)} bytes written)")

    pause = config.get("pause") or ""
    event(f"start pid={os.getpid()}")
    _patch_events(event)
    if pause.startswith("checkpoint:"):
        _pause_in_optimizer_save(int(pause.split(":")[1]), write_half)
    elif pause == "adapter":
        _pause_in_adapter_save(write_half)
    elif pause == "train_metrics":
        _pause_in_file_write("train_metrics.json", stall)

    from kedro.framework.cli import main as kedro_main

    sys.argv = ["kedro", *config["args"]]
    try:
        kedro_main()
    except SystemExit as done:
        event(f"exit {done.code}")
        raise


def _log_as_events(event) -> None:
    """What training logs (resuming, skipping a checkpoint), as events: Kedro's rich log wraps
    lines. Called once Kedro has set up logging, which drops the handlers it finds."""

    class ToEvents(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            event(f"log {record.levelname} {record.getMessage()}")

    logging.getLogger("gemma_pipeline.training").addHandler(ToEvents(logging.INFO))


def _patch_events(event) -> None:
    from kedro.io import DataCatalog
    from transformers import Trainer

    from gemma_pipeline.training import run

    build, step, checkpoint = run.build_trainer, Trainer.training_step, Trainer._save_checkpoint
    catalog_save = DataCatalog.save

    def traced_build(*args, **kwargs):
        _log_as_events(event)
        trainer, setup = build(*args, **kwargs)
        resumed = setup["resumed_from"]
        event(f"train from {int(resumed.rsplit('-', 1)[1]) if resumed else 0}")
        return trainer, setup

    def traced_step(self, *args, **kwargs):
        event(f"step {self.state.global_step + 1}")
        return step(self, *args, **kwargs)

    def traced_checkpoint(self, *args, **kwargs):
        event(f"checkpoint-{self.state.global_step} writing")
        checkpoint(self, *args, **kwargs)
        event(f"checkpoint-{self.state.global_step} written")

    def traced_save(self, name, data):
        event(f"save {name}")
        catalog_save(self, name, data)
        event(f"saved {name}")

    run.build_trainer, Trainer.training_step = traced_build, traced_step
    Trainer._save_checkpoint, DataCatalog.save = traced_checkpoint, traced_save


def _pause_in_optimizer_save(step: int, write_half) -> None:
    import torch

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        path = Path(f) if isinstance(f, str | os.PathLike) else None
        if path and path.name == "optimizer.pt" and path.parent.name == f"checkpoint-{step}":
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            write_half(path, buffer.getvalue(), f"mid optimizer.pt of checkpoint-{step}")
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


def _pause_in_adapter_save(write_half) -> None:
    import peft.peft_model
    import safetensors.torch

    real_save = peft.peft_model.safe_save_file

    def save(tensors, filename, metadata=None):
        if "checkpoint-" not in str(filename):  # the catalog's adapter, not a Trainer checkpoint
            data = safetensors.torch.save(tensors, metadata=metadata)
            write_half(filename, data, f"mid {filename}")
        return real_save(tensors, filename, metadata=metadata)

    peft.peft_model.safe_save_file = save


def _pause_in_file_write(name: str, stall) -> None:
    from fsspec.implementations.local import LocalFileOpener

    real_write = LocalFileOpener.write

    def write(self, data, *args, **kwargs):
        if name in str(self.path):
            real_write(self, data[: len(data) // 2])
            self.f.flush()
            stall(f"mid {self.path} ({len(data) // 2} of {len(data)} bytes written)")
        return real_write(self, data, *args, **kwargs)

    LocalFileOpener.write = write


if __name__ == "__main__":
    config = globals().get("CHILD_CONFIG") or json.loads(Path(sys.argv[1]).read_text())
    main(config)
