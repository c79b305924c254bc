"""Real write faults: a small tmpfs that fills up (ENOSPC), and folders that refuse writes
(EACCES).

We run as root, and root ignores permission bits: ``refused_writes`` makes the folders
read-only *and* takes ``CAP_DAC_OVERRIDE`` out of this thread's effective capabilities, so the
kernel itself answers EACCES. ``kedro run`` in a subprocess gets the same through
``without_dac_override`` (the capability dropped from the bounding set before exec).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CAP_DAC_OVERRIDE = 1
_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAPBSET_DROP = 24
_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _set_effective(capability: int, on: bool) -> None:
    """Raise or lower one capability in this thread's effective set (permitted keeps it)."""
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    if on:
        data[0].effective |= 1 << capability
    else:
        data[0].effective &= ~(1 << capability)
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def without_dac_override() -> None:
    """``preexec_fn`` for a subprocess that, though root, obeys permission bits."""
    if _libc.prctl(_PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@contextlib.contextmanager
def read_only_folders(root: Path) -> Iterator[None]:
    """Every folder under ``root`` (itself included) without write permission, then back."""
    folders = [root, *(path for path in root.rglob("*") if path.is_dir())]
    modes = {folder: folder.stat().st_mode for folder in folders}
    for folder in folders:
        folder.chmod(0o555)
    try:
        yield
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)


@contextlib.contextmanager
def refused_writes(root: Path) -> Iterator[None]:
    """Nothing can be created under ``root`` by this thread: the kernel answers EACCES."""
    with read_only_folders(root):
        _set_effective(CAP_DAC_OVERRIDE, on=False)
        try:
            yield
        finally:
            _set_effective(CAP_DAC_OVERRIDE, on=True)


class SmallDisk:
    """A tmpfs of ``size`` bytes mounted at ``root``, and a filler file that takes its space."""

    def __init__(self, root: Path, size: int) -> None:
        self.root = root
        self.size = size
        self.filler = root / ".filler"

    def free(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take all the space but ``leave`` bytes (rounded down to whole pages)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = b"\0" * (1 << 20)
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        break
                    chunk = chunk[: len(chunk) // 2]
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
        finally:
            os.close(fd)
        assert self.free() <= leave, f"the filler left {self.free()} bytes, not {leave}"

    def clear(self) -> None:
        self.filler.unlink(missing_ok=True)


def mount_small_disk(root: Path, size: int) -> SmallDisk:
    root.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(root)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (root in a container that allows it): "
            f"{mounted.stderr.strip()}"
        )
    return SmallDisk(root, size)


def unmount(disk: SmallDisk) -> None:
    # Lazy: a memory-mapped Arrow file of a loaded dataset may still hold the mount.
    subprocess.run(["umount", "--lazy", str(disk.root)], check=True)
