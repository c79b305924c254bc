"""Issue 14, as a user meets it: `kedro run --env tiny` on a project whose disk is full or whose
data folder refuses writes. The run fails at the save, saying which dataset, which path and what
the OS said; the earlier versions stay the latest, byte for byte; once the fault is cleared the
next run succeeds and its versions become the latest."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .faults import SmallDisk, mount_small_disk, read_only_folders, unmount, without_dac_override

SAVE_FAILED = re.compile(r"Could not save '(\w+)' to '([^']+)': (.+?); nothing of it was kept")
FAULTS = {"ENOSPC": "No space left on device", "EACCES": "Permission denied"}


def _kedro_run(root: Path, *args: str, refused: bool = False) -> subprocess.CompletedProcess:
    env = os.environ | {
        "KEDRO_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "COLUMNS": "2000",  # rich wraps the error at 80 columns without a terminal
    }
    return subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", "tiny", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=without_dac_override if refused else None,
    )


def _tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        )
        for path in root.rglob("*")
        if path.name != ".filler"
    }


def _versions(folder: Path) -> list[str]:
    """A versioned dataset's complete versions, oldest first (as Kedro finds the latest)."""
    return sorted(path.parent.name for path in folder.glob(f"*/{folder.name}"))


def _failed_save(result: subprocess.CompletedProcess) -> tuple[str, str, str]:
    assert result.returncode != 0, "the run did not fail"
    found = SAVE_FAILED.search(result.stderr)
    assert found, result.stderr[-4000:]
    return found.groups()


@pytest.fixture
def project_on_small_disk(tiny_run: Path, tmp_path: Path):
    """``mount(folder)``: a copy of the tiny run's project whose ``folder`` (under data/) is a
    small tmpfs holding what it held; unmounted afterwards."""
    root = tmp_path / "project"
    shutil.copytree(tiny_run, root, symlinks=True)
    disks: list[SmallDisk] = []

    def mount(folder: str) -> tuple[Path, SmallDisk]:
        target = root / folder
        held = tmp_path / "held"
        target.rename(held)
        disk = mount_small_disk(target, 64 << 20)
        disks.append(disk)
        shutil.copytree(held, target, dirs_exist_ok=True)
        return root, disk

    yield mount
    for disk in disks:
        unmount(disk)


def _fill_but_half_the_largest(disk: SmallDisk, latest: Path) -> None:
    """Room for all the latest version took but half its largest file."""
    sizes = [path.stat().st_blocks * 512 for path in latest.rglob("*") if path.is_file()]
    sizes = sizes or [latest.stat().st_blocks * 512]
    disk.fill(leave=sum(sizes) - max(sizes) // 2)


def test_a_run_that_cannot_write_its_report_says_so_and_the_next_run_succeeds(
    project_on_small_disk,
):
    root, disk = project_on_small_disk("data/08_reporting")
    reporting = disk.root
    before = _tree(reporting)
    report_versions = _versions(reporting / "report.md")

    disk.fill(leave=0)
    full = _kedro_run(root, "--pipeline", "report")
    disk.clear()
    with read_only_folders(reporting):
        refused = _kedro_run(root, "--pipeline", "report", refused=True)

    for result, fault in ((full, "ENOSPC"), (refused, "EACCES")):
        name, path, reason = _failed_save(result)
        assert name == "report_md"  # the report node's first output
        assert path.startswith(f"{reporting / 'report.md'}/"), path
        assert path.endswith("/report.md"), path
        assert FAULTS[fault] in reason, reason
    assert _tree(reporting) == before, "a failed run left or changed files"

    ok = _kedro_run(root, "--pipeline", "report")
    assert ok.returncode == 0, ok.stderr[-4000:]
    for name in ("report.md", "report.html", "per_subject.png"):
        versions = _versions(reporting / name)
        assert versions[:-1] == report_versions, name  # one new version each: the latest
    latest = reporting / "report.md" / _versions(reporting / "report.md")[-1] / "report.md"
    assert latest.read_text(encoding="utf-8").startswith("#")
    assert {k: v for k, v in _tree(reporting).items() if k in before} == before


#: Where a whole run fails, by catalog entry: the folder of its versions; and the faults tried.
WHOLE_RUN = {
    "questions": "data/02_intermediate/questions.parquet",
    "tokenized": "data/04_feature/tokenized",
    "adapter": "data/06_models/adapter",
    "merged_model": "data/06_models/merged_model",
    "gguf_files": "data/06_models/gguf",
}
WHOLE_RUN_FAULTS = [
    *((name, "ENOSPC") for name in WHOLE_RUN),
    ("questions", "EACCES"),
    ("adapter", "EACCES"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "fault"), WHOLE_RUN_FAULTS)
def test_a_whole_run_fails_at_the_save_it_cannot_make_and_the_next_run_succeeds(
    name, fault, project_on_small_disk
):
    root, disk = project_on_small_disk(WHOLE_RUN[name])
    folder = disk.root
    (earlier,) = _versions(folder)
    before = _tree(folder)

    if fault == "ENOSPC":
        _fill_but_half_the_largest(disk, folder / earlier / folder.name)
        failed = _kedro_run(root)
        disk.clear()
    else:
        with read_only_folders(folder):
            failed = _kedro_run(root, refused=True)
    failed_name, path, reason = _failed_save(failed)
    assert failed_name == name
    assert path.startswith(f"{folder}/") and path.endswith(f"/{folder.name}"), path
    assert FAULTS[fault] in reason, reason
    assert _tree(folder) == before, "the failed run left or changed files"
    assert _versions(folder) == [earlier]

    ok = _kedro_run(root)
    assert ok.returncode == 0, ok.stderr[-4000:]
    versions = _versions(folder)
    assert versions[0] == earlier and len(versions) == 2
    assert {k: v for k, v in _tree(folder).items() if k in before} == before
