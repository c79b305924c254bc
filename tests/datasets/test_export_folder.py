"""The export's datasets: a folder written whole or not at all, and a file placed in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.io import DatasetError, Version

from gemma_pipeline.datasets import ExportFolderDataset, FileInRunFolderDataset

RUN = "2026-02-02T00.00.00.000Z"


class _Files:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def save_to(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "model-f16.gguf").write_bytes(b"GGUF")
        if self.fail:
            raise OSError("disk full")


def test_the_folder_is_published_only_when_complete(tmp_path):
    dataset = ExportFolderDataset(
        filepath=str(tmp_path / "gguf"), required="*.gguf", version=Version(None, RUN)
    )
    with pytest.raises(DatasetError):
        dataset.save(_Files(fail=True))
    assert not (tmp_path / "gguf" / RUN / "gguf").exists()  # only a .partial folder
    retry = ExportFolderDataset(
        filepath=str(tmp_path / "gguf"), required="*.gguf", version=Version(None, RUN)
    )
    retry.save(_Files())
    assert retry.load() == str(tmp_path / "gguf" / RUN / "gguf")


def test_a_folder_without_the_required_file_does_not_load(tmp_path):
    (tmp_path / "merged" / RUN / "merged").mkdir(parents=True)
    dataset = ExportFolderDataset(
        filepath=str(tmp_path / "merged"), required="config.json", version=Version(None, None)
    )
    with pytest.raises(DatasetError, match=r"No config\.json"):
        dataset.load()


def test_the_card_goes_into_this_runs_folder_and_never_over_a_file(tmp_path):
    folder = tmp_path / "merged_model" / RUN / "merged_model"
    card = FileInRunFolderDataset(
        filepath=str(tmp_path / "merged_model"), file_name="README.md", version=Version(None, RUN)
    )
    with pytest.raises(DatasetError, match="must be saved earlier in this run"):
        card.save("# card")
    folder.mkdir(parents=True)
    card.save("# card")
    assert (folder / "README.md").read_text() == "# card"
    assert card.load() == "# card"
    with pytest.raises(DatasetError, match="nothing is overwritten"):
        card.save("# another card")
    assert (folder / "README.md").read_text() == "# card"


def test_the_card_is_read_back_from_this_run_not_a_later_folder(tmp_path):
    """Another run's folder, newer and without a card yet, does not hide this run's card."""
    for version in (RUN, "2026-02-03T00.00.00.000Z"):
        (tmp_path / "merged_model" / version / "merged_model").mkdir(parents=True)
    card = FileInRunFolderDataset(
        filepath=str(tmp_path / "merged_model"), file_name="README.md", version=Version(None, RUN)
    )
    card.save("# this run")
    assert card.load() == "# this run"
