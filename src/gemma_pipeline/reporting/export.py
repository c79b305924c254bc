"""The exports and their checks (``export_checks.json``): one table, shown in the run report
and in the model card.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gemma_pipeline.reporting.blocks import Block, Bullets, Heading, Paragraph, Styled, Table
from gemma_pipeline.reporting.formatting import MISSING


def size_text(size_bytes: Any) -> str:
    if not isinstance(size_bytes, int | float):
        return MISSING
    if size_bytes >= 2**20:
        return f"{size_bytes / 2**20:,.0f} MiB"
    return f"{size_bytes / 2**10:.0f} KiB"


def _verdict(passed: Any, failures: Any = ()) -> Styled:
    if passed:
        return Styled("pass", "strong")
    return Styled("; ".join(["FAIL", *(failures or [])]), "strong")


def export_rows(checks: Mapping[str, Any]) -> list[list[Any]]:
    """One row per exported format: size, and what each check measured."""
    merge = checks.get("merge") or {}
    rows: list[list[Any]] = [
        [
            "merged (safetensors)",
            size_text(checks.get("merged_size_bytes")),
            f"max |logit diff| {merge.get('max_abs_logit_diff', float('nan')):.3g} "
            f"(≤ {merge.get('tolerance', float('nan')):g}) vs base + adapter",
            f"{merge.get('greedy_tokens', MISSING)} tokens "
            + ("identical" if merge.get("greedy_identical") else "DIFFER"),
            MISSING,
            MISSING,
            _verdict(merge.get("passed")),
        ]
    ]
    gguf = checks.get("gguf") or {}
    for kind, result in (gguf.get("files") or {}).items():
        greedy, heldout = result.get("greedy") or {}, result.get("heldout") or {}
        agreeing = greedy.get("identical_prefix_tokens") or [0]
        tokenizer = result.get("tokenizer") or {}
        rows.append(
            [
                f"GGUF {kind}",
                size_text(result.get("size_bytes")),
                f"tokenizer {'=' if tokenizer.get('passed') else '≠'} HF on "
                f"{tokenizer.get('strings', 0)} strings; metadata "
                f"{'ok' if (result.get('metadata') or {}).get('passed') else 'WRONG'}; stops at "
                f"<end_of_turn>: {'yes' if (result.get('stop') or {}).get('passed') else 'NO'}",
                f"{min(agreeing)}/{greedy.get('tokens', MISSING)} tokens identical",
                f"{heldout.get('perplexity', float('nan')):.4g} "
                f"({100 * heldout.get('perplexity_change', float('nan')):+.2f}%)",
                f"{100 * heldout.get('top1_agreement', float('nan')):.1f}%",
                _verdict(result.get("passed"), result.get("failures")),
            ]
        )
    if gguf.get("not_checked"):
        for kind, size in (gguf.get("sizes") or {}).items():
            rows.append([f"GGUF {kind}", size_text(size), "not checked", *[MISSING] * 3, "—"])
    return rows


def export_verdict(checks: Mapping[str, Any]) -> str:
    """ "all checks passed", or which formats failed."""
    if checks.get("passed"):
        return "all checks passed"
    failed = [row[0] for row in export_rows(checks) if row[-1] != Styled("pass", "strong")]
    return f"FAILED: {', '.join(failed)}"


def export_table(checks: Mapping[str, Any]) -> Table:
    return Table(
        [
            "format",
            "size",
            "checks",
            "greedy vs transformers",
            "held-out perplexity (vs f16)",
            "top-1 = f16",
            "verdict",
        ],
        export_rows(checks),
        align="lrllrrl",
    )


def export_blocks(checks: Mapping[str, Any]) -> list[Block]:
    """The exports section (none without ``export_checks``)."""
    if not checks:
        return []
    gguf = checks.get("gguf") or {}
    notes = [
        "merged: the adapter merged into the base loaded in bf16; compared, reloaded from its "
        "folder, with base + adapter unmerged, both computed in float32 on fixed chat prompts",
        "GGUF: loaded by llama.cpp itself "
        f"({gguf.get('runtime') or 'not installed'}); greedy continuations of the same prompts "
        "against the merged model in transformers; perplexity and top-1 agreement on "
        f"{gguf.get('heldout_tokens', MISSING)} completion tokens of "
        f"{gguf.get('heldout_texts', MISSING)} held-out questions (scored as training scored "
        f"them: {gguf.get('heldout_scored', MISSING)}), relative to f16",
    ]
    if gguf.get("not_checked"):
        notes.append(f"GGUF files not checked: {gguf['not_checked']}")
    overall = export_verdict(checks)
    return [
        Heading("Exports"),
        Paragraph(f"Every export checked against the model it came from: {overall}."),
        export_table(checks),
        Bullets(notes),
    ]
