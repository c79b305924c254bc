import pytest
from datasets import Dataset, DatasetDict
from kedro.io import DatasetError, Version

from gemma_pipeline.datasets import HFArrowDataset


def _data(n: int) -> DatasetDict:
    return DatasetDict({"train": Dataset.from_dict({"input_ids": [[1, 2, 3]] * n})})


def test_versions_are_kept_and_the_latest_is_loaded(tmp_path):
    path = str(tmp_path / "tokenized")
    HFArrowDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(_data(2))
    HFArrowDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(_data(5))

    latest = HFArrowDataset(filepath=path, version=Version(None, None))
    assert latest.exists()
    assert len(latest.load()["train"]) == 5
    pinned = HFArrowDataset(filepath=path, version=Version("2026-01-01T00.00.00.000Z", None))
    assert len(pinned.load()["train"]) == 2


def test_an_existing_version_is_never_overwritten(tmp_path):
    version = Version(None, "2026-01-01T00.00.00.000Z")
    HFArrowDataset(filepath=str(tmp_path / "t"), version=version).save(_data(1))
    with pytest.raises(DatasetError, match="must not exist"):
        HFArrowDataset(filepath=str(tmp_path / "t"), version=version).save(_data(1))


def test_refuses_other_types(tmp_path):
    dataset = HFArrowDataset(filepath=str(tmp_path / "t"), version=Version(None, None))
    with pytest.raises(DatasetError, match="DatasetDict"):
        dataset.save({"train": [1]})
    assert not dataset.exists()
