"""The dataset tests' write faults (see faults.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .faults import SmallDisk, mount_small_disk, unmount


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A fresh 16 MiB tmpfs at ``tmp_path / "data"``, unmounted afterwards."""
    disk = mount_small_disk(tmp_path / "data", 16 << 20)
    try:
        yield disk
    finally:
        unmount(disk)
