"""The export pipeline run alone on versioned files, on a pinned adapter (`--load-versions`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from gemma_pipeline.pipeline_registry import register_pipelines

ROOT = Path(__file__).resolve().parents[3]
REPORTING = ROOT / "tests" / "reporting" / "data"
PINNED, LATER, RUN = (
    "2026-01-01T00.00.00.000Z",
    "2026-01-02T00.00.00.000Z",
    "2026-02-02T00.00.00.000Z",
)


def _catalog_config(tmp_path: Path) -> dict:
    config = yaml.safe_load((ROOT / "conf" / "base" / "catalog.yml").read_text())
    for entry in config.values():
        entry["filepath"] = str(tmp_path / entry["filepath"])
    return config


def _prompts() -> pd.DataFrame:
    rows = [
        ("q1", "q1", "test", "What is 1 + 1?\nA. 1\nB. 2", "B. 2"),
        ("q1/rot1", "q1", "test", "What is 1 + 1?\nA. 2\nB. 1", "A. 2"),  # a rotation: skipped
        ("q2", "q2", "test", "Capital of France?\nA. Paris\nB. Rome", "A. Paris"),
        ("t1", "t1", "train", "Trained on?\nA. yes\nB. no", "A. yes"),
    ]
    frame = pd.DataFrame(rows, columns=["row_id", "question_id", "split", "user", "answer"])
    frame["prompt"] = (
        "<bos><start_of_turn>user\n" + frame["user"] + "<end_of_turn>\n<start_of_turn>model\n"
    )
    frame["completion"] = frame["answer"] + "<end_of_turn>\n"
    frame["task"] = "mmlu"
    return frame.drop(columns=["user", "answer"])


def test_export_runs_alone_on_a_pinned_adapter(tmp_path, gemma2_dir, make_adapter):
    export = register_pipelines()["export"]
    assert {n for n in export.inputs() if not n.startswith("params:")} == {
        "adapter",
        "prompts",
        "heldout_metrics",
        "benchmark_metrics",
        "run_metadata",
    }
    config = _catalog_config(tmp_path)
    adapters = Path(config["adapter"]["filepath"])
    for version in (PINNED, LATER):
        make_adapter(gemma2_dir, adapters / version / "adapter")
    earlier = DataCatalog.from_config(config, save_version=PINNED)
    earlier.save("prompts", _prompts())
    for name in ("heldout_metrics", "benchmark_metrics"):
        earlier.save(name, json.loads((REPORTING / f"{name}.json").read_text()))

    catalog = DataCatalog.from_config(config, load_versions={"adapter": PINNED}, save_version=RUN)
    catalog["run_metadata"] = {"save_version": RUN, "load_versions": {"adapter": PINNED}}
    params = {
        # float32: see tests/export/test_gguf.py's `exported` on tiny models and bf16.
        "export": {
            "name": "tiny-ft",
            "merge_dtype": "float32",
            # A random model's argmax flips under any rounding (tests/export/test_gguf.py).
            "checks": {"prompts": ["What is 2 + 2?"], "quantized_min_top1_agreement": 0.25},
        },
        "model": {"name_or_path": str(gemma2_dir)},
        "evaluate": {},
        "ingest": {"sources": {}},
        "train_qlora": {},
        "report": {},
    }
    for section, values in params.items():
        catalog[f"params:{section}"] = values
    SequentialRunner().run(export, catalog)

    checks = catalog.load("export_checks")
    assert checks["adapter"] == str(adapters / PINNED / "adapter")
    assert checks["passed"], json.dumps(checks, indent=1)[:2000]
    assert checks["gguf"]["heldout_texts"] == 2  # the test split, rotations left out

    merged = Path(config["merged_model"]["filepath"]) / RUN / "merged_model"
    assert catalog.load("merged_model") == str(merged)
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert str(model.dtype) == "torch.float32"
    assert AutoTokenizer.from_pretrained(merged).chat_template
    card = catalog.load("model_card")
    assert (merged / "README.md").read_text() == card
    assert card.startswith("---\n")
    assert "Gemma Terms of Use" in card
    assert f"| adapter | {PINNED} |" in card
    for kind in ("f16", "q8_0", "q4_k_m"):
        name = f"tiny-ft-{kind}.gguf"
        assert (Path(config["gguf_files"]["filepath"]) / RUN / "gguf" / name).is_file()
        assert f"| GGUF {kind} |" in card
    assert catalog.load("hub_push") == {"pushed": False, "reason": "export.push_to_hub is not set"}
