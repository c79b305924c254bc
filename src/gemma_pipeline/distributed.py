"""Where this process sits in a data-parallel launch (``torchrun``, ``accelerate launch``).

Both launchers start one process per GPU and tell each its place through the environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), before any of our code runs. Reading them here,
rather than from ``torch.distributed``, works before the process group exists: the model is
placed, and the Kedro run is cut to rank 0's share or another's, before training starts it.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """Processes of the launch (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's index among all processes of the launch, on every node (0 without one)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's index on its machine: the GPU it trains on."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0: the process that writes the run's artifacts, checkpoints, logs to W&B."""
    return rank() == 0


def check_same_on_every_process(values: dict[str, object]) -> None:
    """Fail on every process, naming what differs, unless all processes hold equal ``values``.

    Data-parallel processes must start from the same state (the same training rows, the same
    checkpoint to resume): one that differs would not fail, it would silently train another
    model's gradients into the average. Needs the process group (the Trainer starts it).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    gathered: list[dict[str, object] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, values)
    for key in values:
        seen = {index: found[key] for index, found in enumerate(gathered) if found is not None}
        if any(value != seen[0] for value in seen.values()):
            listed = ", ".join(f"rank {index}: {value!r}" for index, value in seen.items())
            raise RuntimeError(f"data-parallel processes disagree on {key} ({listed})")
