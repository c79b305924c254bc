"""The exports table: one row per format, what each check measured, and the verdicts."""

from __future__ import annotations

from gemma_pipeline.reporting.blocks import Styled, render_markdown_blocks
from gemma_pipeline.reporting.export import export_blocks, export_rows, size_text


def test_one_row_per_format_with_size_and_measured_fidelity(export_checks):
    rows = export_rows(export_checks)
    formats = ["merged (safetensors)", "GGUF f16", "GGUF q8_0", "GGUF q4_k_m"]
    assert [row[0] for row in rows] == formats
    merged, f16, q8, _ = rows
    assert merged[1] == "421 KiB"
    assert merged[2].startswith("max |logit diff| 1.03e-06 (≤ 0.05)")
    assert f16[1] == size_text(export_checks["gguf"]["files"]["f16"]["size_bytes"])
    assert f16[3] == "32/32 tokens identical"
    assert f16[4].endswith("(+0.00%)")
    q8_change = export_checks["gguf"]["files"]["q8_0"]["heldout"]["perplexity_change"]
    assert q8[4].endswith(f"({100 * q8_change:+.2f}%)")
    assert all(row[-1] == Styled("pass", "strong") for row in rows)


def test_a_failed_check_shows_as_fail(export_checks):
    export_checks["gguf"]["files"]["q8_0"]["tokenizer"]["passed"] = False
    export_checks["gguf"]["files"]["q8_0"]["passed"] = False
    export_checks["gguf"]["files"]["q8_0"]["failures"] = ["tokenizer"]
    export_checks["passed"] = False
    rows = export_rows(export_checks)
    assert "tokenizer ≠ HF" in rows[2][2]
    assert rows[2][-1] == Styled("FAIL; tokenizer", "strong")
    md = render_markdown_blocks(export_blocks(export_checks))
    assert "Every export checked against the model it came from: FAILED: GGUF q8_0." in md


def test_files_that_llama_cpp_could_not_check_say_so():
    checks = {
        "merge": {"passed": True, "max_abs_logit_diff": 0.1, "tolerance": 0.5},
        "gguf": {
            "runtime": None,
            "sizes": {"f16": 3 * 2**20, "q8_0": 2**20},
            "not_checked": "llama.cpp's runtime is not installed",
            "passed": False,
        },
        "passed": False,
    }
    rows = export_rows(checks)
    assert rows[1][:3] == ["GGUF f16", "3 MiB", "not checked"]
    md = render_markdown_blocks(export_blocks(checks))
    assert "GGUF files not checked: llama.cpp's runtime is not installed" in md


def test_no_export_no_section():
    assert export_blocks({}) == []
