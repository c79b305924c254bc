"""The catalog's file datasets save atomically: a save that dies half-way leaves no version for
a later run to load. The fault is injected at the real write (fsspec's local file), as a disk
that fills up half-way through; tests/training/test_killed_run.py SIGKILLs a real run."""

import errno
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fsspec.implementations.local import LocalFileOpener
from kedro.io import DatasetError, Version
from kedro_datasets.json import JSONDataset as StockJSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset as StockMatplotlibDataset
from kedro_datasets.pandas import ParquetDataset as StockParquetDataset
from kedro_datasets.text import TextDataset as StockTextDataset
from matplotlib.figure import Figure
from PIL import Image

from gemma_pipeline.datasets import files

OLD, NEW = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"
CATALOG = Path(__file__).resolve().parents[2] / "conf" / "base" / "catalog.yml"


def _figure(title: str) -> Figure:
    figure = Figure()
    figure.add_subplot().set_title(title)
    return figure


#: name: (our class, kedro-datasets' class, file name, extra arguments, old data, new data)
CASES = {
    "parquet": (
        files.ParquetDataset,
        StockParquetDataset,
        "rows.parquet",
        {},
        pd.DataFrame({"x": [1, 2]}),
        pd.DataFrame({"x": list(range(10_000))}),
    ),
    "json": (
        files.JSONDataset,
        StockJSONDataset,
        "metrics.json",
        {},
        {"loss": 1.0},
        {"loss": 0.5, "history": list(range(1000))},
    ),
    "text": (
        files.TextDataset,
        StockTextDataset,
        "report.md",
        {
            "fs_args": {
                "open_args_save": {"encoding": "utf-8"},
                "open_args_load": {"encoding": "utf-8"},
            }
        },
        "# old report\n",
        "# new report: accuracy 71 % ± 2\n" * 100,
    ),
    "png": (
        files.MatplotlibDataset,
        StockMatplotlibDataset,
        "curve.png",
        {},
        _figure("old"),
        _figure("new"),
    ),
}


def _dataset(cls, folder: Path, name: str, extra: dict, save: str | None = None):
    return cls(filepath=str(folder / name), version=Version(None, save), **extra)


def _loads(case: str, dataset) -> object:
    """The dataset's latest version, loaded (a PNG, which kedro cannot load, decoded whole)."""
    if case != "png":
        return dataset.load()
    path = Path(dataset._get_load_path())
    with Image.open(path) as image:
        image.load()  # raises on a truncated file
        return image.size


def _disk_fills_half_way(monkeypatch) -> None:
    real_write = LocalFileOpener.write

    def write(self, data, *args, **kwargs):
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device (injected half-way)")

    monkeypatch.setattr(LocalFileOpener, "write", write)


@pytest.mark.parametrize("case", CASES)
def test_saves_and_loads_like_kedro_datasets(case, tmp_path):
    ours, _, name, extra, _, new = CASES[case]
    _dataset(ours, tmp_path, name, extra, save=NEW).save(new)
    loaded = _loads(case, _dataset(ours, tmp_path, name, extra))
    if case == "parquet":
        pd.testing.assert_frame_equal(loaded, new)
    elif case != "png":
        assert loaded == new
    assert [path.name for path in (tmp_path / name).rglob("*")] == [NEW, name]


@pytest.mark.parametrize("case", CASES)
def test_a_save_that_dies_half_way_leaves_the_previous_version_latest(case, tmp_path, monkeypatch):
    ours, _, name, extra, old, new = CASES[case]
    _dataset(ours, tmp_path, name, extra, save=OLD).save(old)
    expected = _loads(case, _dataset(ours, tmp_path, name, extra))

    _disk_fills_half_way(monkeypatch)
    with pytest.raises(DatasetError, match="No space left"):
        _dataset(ours, tmp_path, name, extra, save=NEW).save(new)
    monkeypatch.undo()

    latest = _dataset(ours, tmp_path, name, extra)
    assert latest.resolve_load_version() == OLD
    assert _loads(case, latest) is not None
    if case == "parquet":
        pd.testing.assert_frame_equal(_loads(case, latest), old)
    else:
        assert _loads(case, latest) == expected
    assert list((tmp_path / name / NEW).iterdir()) == []  # not even the .partial


@pytest.mark.parametrize("case", CASES)
def test_kedro_datasets_own_save_leaves_a_truncated_latest_version(case, tmp_path, monkeypatch):
    """The defect the classes above fix, shown on kedro-datasets' own classes."""
    _, stock, name, extra, old, new = CASES[case]
    _dataset(stock, tmp_path, name, extra, save=OLD).save(old)
    _disk_fills_half_way(monkeypatch)
    with pytest.raises(DatasetError, match="No space left"):
        _dataset(stock, tmp_path, name, extra, save=NEW).save(new)
    monkeypatch.undo()

    latest = _dataset(stock, tmp_path, name, extra)
    assert latest.resolve_load_version() == NEW  # the half-written file is "latest"
    if case == "text":
        assert 0 < len(latest.load()) < len(new)  # and a truncated report loads without a word
    else:
        with pytest.raises((DatasetError, OSError)):
            _loads(case, latest)


def test_every_versioned_file_in_the_catalog_saves_atomically():
    # The project's own datasets write a folder or file aside and rename it (_versioned_folder.py).
    catalog = yaml.safe_load(CATALOG.read_text())
    in_place = {
        name: entry["type"]
        for name, entry in catalog.items()
        if entry.get("versioned") and not entry["type"].startswith("gemma_pipeline.datasets.")
    }
    assert in_place == {}, f"{CATALOG.name}: these would leave half-written versions: {in_place}"
