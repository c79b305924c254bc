"""One process of a data-parallel launch in the tests: ``torchrun ... data_parallel_worker.py``.

    data_parallel_worker.py AUDIT_DIR ROOT kedro run --env tiny ...   # `kedro` with those args
    data_parallel_worker.py AUDIT_DIR ROOT train SPEC_JSON            # train_adapter, see below

First an audit hook (``sys.addaudithook``) starts recording every write this process makes
under ROOT: files opened for writing, folders made, renames, removals, as Python makes them.
A file written by native code (``torch.save`` to a path, safetensors) is not seen itself, but
the folder it goes in is made (``os.makedirs``, even of one that exists) or renamed into place
(the catalog's folder datasets) in Python. At exit the list goes to
``AUDIT_DIR/rank<RANK>.json``, so a test can check which process wrote what.

``train``: ``train_adapter`` on the rows saved (``save_to_disk``) at ``spec["rows"]``, once for
each of ``spec["runs"]`` (``name``, ``params``); with ``interrupt_at: k`` the k-th micro-batch
of every process raises first, as a run that dies there, and the run is then resumed
(``resume=true``) in the same processes. Rank 0 saves each run's adapter and loss history under
``spec["out"]/<name>``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
from pathlib import Path

_WRITING_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_CHANGING_EVENTS = {
    "os.mkdir",
    "os.rename",
    "os.replace",
    "os.remove",
    "os.rmdir",
    "os.truncate",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
}


def record_writes(root: Path, audit_file: Path) -> None:
    root_text = str(root.resolve())
    writes: list[str] = []

    def under_root(path: object) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str | os.PathLike):
            return None
        absolute = os.path.abspath(os.fspath(path))
        return absolute if absolute.startswith(root_text) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITING_FLAGS
            )
            paths = [path] if writing else []
        elif event in ("os.symlink", "os.link"):
            paths = [args[1]]  # the link made; its target may be anything
        elif event in _CHANGING_EVENTS:
            paths = [arg for arg in args[:2] if isinstance(arg, str | bytes | os.PathLike)]
        else:
            return
        for path in paths:
            found = under_root(path)
            if found is not None:
                writes.append(f"{event} {found}")

    sys.addaudithook(hook)
    # Written outside ROOT; by then the list is complete.
    atexit.register(lambda: audit_file.write_text(json.dumps(writes)))


def train(spec: dict) -> None:
    """Each of ``spec["runs"]`` in turn, in the same processes."""
    from datasets import load_from_disk

    from gemma_pipeline.config import ModelParams, TrainQloraParams
    from gemma_pipeline.distributed import is_main_process
    from gemma_pipeline.training.run import train_adapter
    from gemma_pipeline.training.trainer import QLoRASFTTrainer

    rows = load_from_disk(spec["rows"])
    model = ModelParams(name_or_path=spec["model"])
    for run in spec["runs"]:
        params = TrainQloraParams.model_validate(run["params"])
        if run.get("interrupt_at"):
            original = QLoRASFTTrainer.training_step
            calls = {"n": 0}

            def dying_step(
                self, *args, _calls=calls, _at=run["interrupt_at"], _original=original, **kwargs
            ):
                _calls["n"] += 1
                if _calls["n"] == _at:  # on every process: none waits on another
                    raise KeyboardInterrupt
                return _original(self, *args, **kwargs)

            QLoRASFTTrainer.training_step = dying_step
            with contextlib.suppress(KeyboardInterrupt):
                train_adapter(rows, params, model)
            QLoRASFTTrainer.training_step = original
            params = params.model_copy(update={"resume": True})
        adapter, history = train_adapter(rows, params, model)
        if is_main_process():
            out = Path(spec["out"]) / run["name"]
            adapter.save_pretrained(out / "adapter")
            losses = [entry["loss"] for entry in history["log_history"] if "loss" in entry]
            kept = {key: history[key] for key in ("resumed_from", "global_steps", "train_rows")}
            (out / "history.json").write_text(
                json.dumps(kept | {"losses": losses, "setup": history["setup"]}, default=str)
            )


def main() -> None:
    audit_dir, root, command, *rest = sys.argv[1:]
    record_writes(Path(root), Path(audit_dir) / f"rank{os.environ.get('RANK', '0')}.json")
    if command == "train":
        train(json.loads(rest[0]))
    else:
        from kedro.framework.cli import main as kedro

        sys.argv = ["kedro", *rest]
        kedro()


if __name__ == "__main__":
    main()
