"""Which checkpoint a resumed run continues: the newest one that is whole.

transformers' ``get_last_checkpoint`` picks the highest ``checkpoint-N`` folder, and the Trainer
writes that folder file by file (adapter, optimizer, scheduler, RNG states, trainer state). A run
killed in between leaves a folder the Trainer resumes from anyway: without ``trainer_state.json``
it starts again at step 0, without ``optimizer.pt`` or ``scheduler.pt`` it keeps fresh ones,
without ``rng_state.pth`` it draws other dropout masks, each time silently. So every file is
checked here, loaded as the Trainer loads it, before a checkpoint is used.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.trainer_pt_utils import safe_globals

from gemma_pipeline.distributed import is_main_process

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# torch.load'ed by the Trainer on resume; rng_state.pth is rng_state_<rank>.pth on several ranks.
_TORCH_FILES = ("optimizer.pt", "scheduler.pt")
_RNG_FILES = "rng_state*.pth"
#: The prefix a checkpoint that cannot be resumed from is renamed with: out of the Trainer's
#: ``checkpoint-*`` globs, so neither resuming nor ``save_total_limit`` rotation sees it again.
SKIPPED_PREFIX = "skipped-"


def checkpoint_step(folder: Path) -> int:
    """The step of ``checkpoint-<step>``."""
    match = _CHECKPOINT.match(folder.name)
    if match is None:
        raise ValueError(f"'{folder}' is not named checkpoint-<step>")
    return int(match.group(1))


def checkpoint_problems(folder: Path) -> list[str]:
    """Why a resumed run cannot continue from ``folder``: every file it needs that is missing or
    does not load. Empty when the checkpoint is whole."""
    match = _CHECKPOINT.match(folder.name)
    if match is None:
        return [f"'{folder.name}' is not named checkpoint-<step>"]
    problems = []
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        if state["global_step"] != int(match.group(1)):
            problems.append(f"trainer_state.json is at step {state['global_step']}")
    except FileNotFoundError:
        problems.append("trainer_state.json is missing")
    except (OSError, ValueError, KeyError, TypeError) as error:
        problems.append(f"trainer_state.json does not parse ({type(error).__name__}: {error})")
    try:
        json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append("adapter_config.json is missing")
    except (OSError, ValueError) as error:
        problems.append(f"adapter_config.json does not parse ({type(error).__name__}: {error})")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        problems.append(f"{weights.name} is missing")
    else:
        try:
            with safe_open(str(weights), framework="pt") as tensors:
                for name in tensors.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    tensors.get_tensor(name)
        except Exception as error:  # safetensors raises its own errors, OSError and others
            problems.append(f"{weights.name} does not load ({type(error).__name__}: {error})")
    rng_files = sorted(folder.glob(_RNG_FILES))
    if not rng_files:
        problems.append("rng_state.pth is missing")
    for path in [folder / name for name in _TORCH_FILES] + rng_files:
        if not path.is_file():
            problems.append(f"{path.name} is missing")
            continue
        try:
            with safe_globals():
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated zip, garbage, an unexpected pickle: unusable
            problems.append(f"{path.name} does not load ({type(error).__name__}: {error})")
    return problems


def last_good_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` in ``output_dir`` a run can resume from, or None.

    Each newer one that cannot be used is logged with the reason and renamed
    ``skipped-checkpoint-N`` (kept for inspection, never resumed from or rotated). Under a
    data-parallel launch only the main process renames; the others skip the same folders.
    """
    if not output_dir.is_dir():
        return None
    checkpoints = [
        path for path in output_dir.iterdir() if path.is_dir() and _CHECKPOINT.match(path.name)
    ]
    checkpoints.sort(key=lambda path: int(_CHECKPOINT.match(path.name).group(1)), reverse=True)
    for folder in checkpoints:
        problems = checkpoint_problems(folder)
        if not problems:
            return folder
        if not is_main_process():
            continue
        skipped = _free_name(output_dir, SKIPPED_PREFIX + folder.name)
        folder.rename(skipped)
        logger.warning(
            "Skipping checkpoint %s: %s. Renamed it %s; trying the one before.",
            folder,
            "; ".join(problems),
            skipped.name,
        )
    return None


def _free_name(parent: Path, name: str) -> Path:
    """``parent/name``, or ``parent/name.2``, ``.3``... when a run was killed there before."""
    candidate, copy = parent / name, 1
    while candidate.exists():
        copy += 1
        candidate = parent / f"{name}.{copy}"
    return candidate
