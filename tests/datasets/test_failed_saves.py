"""Issue 14: every versioned dataset of conf/base/catalog.yml, saved through the project's
catalog onto a disk that is full (a real tmpfs, filled) or whose folders refuse writes (real
EACCES). The save fails naming the dataset, the path and what the OS said; the earlier
version is untouched and still the latest; nothing of the failed one is left; and once the
fault is cleared the next save works and becomes the latest."""

from __future__ import annotations

import hashlib
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict
from kedro.io import DatasetError
from matplotlib.figure import Figure
from peft import LoraConfig, get_peft_model
from PIL import Image

from gemma_pipeline.datasets import ArtifactCatalog
from gemma_pipeline.export.gguf import GgufFiles
from gemma_pipeline.export.merged import MergedModel
from gemma_pipeline.modeling import load_causal_lm

from .faults import SmallDisk, refused_writes

REPO = Path(__file__).resolve().parents[2]
ENTRIES = yaml.safe_load((REPO / "conf" / "base" / "catalog.yml").read_text())
V1, V2, V3 = "2026-03-01T00.00.00.000Z", "2026-03-02T00.00.00.000Z", "2026-03-03T00.00.00.000Z"
FAULTS = {"ENOSPC": "No space left on device", "EACCES": "Permission denied"}


def _catalog(root: Path, save_version: str, load_version: dict[str, str] | None = None):
    entries = {
        name: {**entry, "filepath": str(root / entry["filepath"])}
        for name, entry in ENTRIES.items()
    }
    return ArtifactCatalog.from_config(
        entries, save_version=save_version, load_versions=load_version or {}
    )


class _Samples:
    """What each catalog entry holds, different for each seed; the models are tiny."""

    def __init__(self, model_dir: Path, tokenizer: Any, gguf_dir: Path, scratch: Path) -> None:
        self.model_dir, self.tokenizer, self.gguf_dir, self.scratch = (
            model_dir,
            tokenizer,
            gguf_dir,
            scratch,
        )

    def __call__(self, name: str, seed: int) -> Any:
        kind = ENTRIES[name]["type"].rsplit(".", 1)[-1]
        rng = np.random.default_rng(seed)
        if kind == "ParquetDataset":
            return pd.DataFrame({"row": np.arange(20_000), "value": rng.random(20_000)})
        if kind == "JSONDataset":
            return {"seed": seed, "values": rng.random(5_000).tolist()}
        if kind in ("TextDataset", "FileInRunFolderDataset"):
            return "".join(rng.choice(list(string.ascii_letters), 100_000))
        if kind == "MatplotlibDataset":
            figure = Figure()  # no pyplot: no backend, nothing left open
            axes = figure.subplots()
            axes.scatter(rng.random(2_000), rng.random(2_000), s=1)
            return figure
        if kind == "HFArrowDataset":
            ids = rng.integers(0, 768, (500, 64)).tolist()
            return DatasetDict({"train": Dataset.from_dict({"input_ids": ids})})
        if kind == "PeftAdapterDataset":
            return self._adapter(seed)
        if name == "merged_model":
            return MergedModel(self._adapter(seed).merge_and_unload(), self.tokenizer, None)
        if name == "gguf_files":  # save_to moves them: a fresh copy for each save
            scratch = Path(tempfile.mkdtemp(dir=self.scratch))
            for path in self.gguf_dir.glob("*.gguf"):
                shutil.copyfile(path, scratch / path.name)
            names = {path.stem.rsplit("-", 1)[-1]: path.name for path in scratch.glob("*.gguf")}
            return GgufFiles(scratch, names)
        raise AssertionError(f"no sample for catalog entry {name!r} ({kind}): add one")

    def _adapter(self, seed: int) -> Any:
        torch.manual_seed(seed)
        model = load_causal_lm(str(self.model_dir), embedded_cache_dir="x", dtype="float32")
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        return get_peft_model(model, config)


@pytest.fixture(scope="module")
def samples(tiny_model_dir, tiny_tokenizer, tiny_project, tmp_path_factory) -> _Samples:
    gguf_dir = next((tiny_project / "data" / "06_models" / "gguf").glob("*/gguf"))
    return _Samples(tiny_model_dir, tiny_tokenizer, gguf_dir, tmp_path_factory.mktemp("scratch"))


def _prepare(root: Path, name: str, version: str) -> None:
    """The card goes into the merged folder its run saved first: that folder, made here."""
    if name == "merged_model_card":
        folder = Path(ENTRIES["merged_model"]["filepath"])
        (root / folder / version / folder.name).mkdir(parents=True)


def _tree(root: Path) -> dict[str, str]:
    """Every folder and file under ``root`` (the filler aside), files by content."""
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        )
        for path in root.rglob("*")
        if path.name != ".filler"
    }


def _read_back(catalog: ArtifactCatalog, name: str) -> Any:
    """The dataset's value as loaded, in a comparable form; a plot is opened as an image."""
    dataset = catalog[name]
    if ENTRIES[name]["type"].endswith("MatplotlibDataset"):  # Kedro cannot load plots
        path = Path(dataset._get_load_path())
        with Image.open(path) as image:
            image.load()
        return path.read_bytes()
    value = catalog.load(name)
    if isinstance(value, pd.DataFrame):
        return value.to_dict("list")
    if isinstance(value, DatasetDict):
        return {split: rows.to_dict() for split, rows in value.items()}
    if ENTRIES[name]["type"].endswith(("PeftAdapterDataset", "ExportFolderDataset")):
        return (value, _tree(Path(value)))  # the folder datasets load their path
    return value


def _saved_path(root: Path, name: str, version: str) -> Path:
    folder = root / ENTRIES[name]["filepath"]
    return folder / version / folder.name


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", ENTRIES)
def test_a_failed_save_names_the_dataset_keeps_the_last_version_and_leaves_nothing(
    name, fault, small_disk: SmallDisk, samples
):
    root = small_disk.root.parent
    _prepare(root, name, V1)
    _catalog(root, V1).save(name, samples(name, seed=1))
    before = _read_back(_catalog(root, V3, {name: V1}), name)
    sizes = [  # as tmpfs counts them: whole pages
        path.stat().st_blocks * 512
        for path in (root / ENTRIES[name]["filepath"] / V1).rglob("*")
        if path.is_file()
    ]
    _prepare(root, name, V2)
    tree = _tree(small_disk.root)

    data = samples(name, seed=2)
    failing = _catalog(root, V2)
    if fault == "ENOSPC":
        # Room for all the last version took but half its largest file: the new version
        # fails midway through its largest file, after the others are written.
        small_disk.fill(leave=sum(sizes) - max(sizes) // 2)
        with pytest.raises(DatasetError) as raised:
            failing.save(name, data)
        small_disk.clear()
    else:
        with refused_writes(small_disk.root), pytest.raises(DatasetError) as raised:
            failing.save(name, data)

    message = str(raised.value)
    assert f"'{name}'" in message, message
    assert str(_saved_path(root, name, V2)) in message, message
    assert FAULTS[fault] in message, message
    assert _tree(small_disk.root) == tree, "the failed save left or changed files"
    if isinstance(data, GgufFiles):
        assert not data.scratch.exists(), "the GGUF files were left in the temp folder"
    assert _read_back(_catalog(root, V3, {name: V1}), name) == before
    if name != "merged_model_card":  # its latest is the latest merged folder, made above
        assert _catalog(root, V3)[name].resolve_load_version() == V1

    _prepare(root, name, V3)
    data = samples(name, seed=3)
    _catalog(root, V3).save(name, data)
    assert _catalog(root, V3)[name].resolve_load_version() == V3
    assert _read_back(_catalog(root, V3, {name: V3}), name) != before
