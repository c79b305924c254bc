"""The merged folder as GGUF files: f16 and q8_0 always, q4_k_m with llama.cpp's quantizer.

f16 and q8_0 come from llama.cpp's converter, each straight from the merged weights (q8_0 is
not a re-quantized f16). q4_k_m is made from the f16 file by llama.cpp's quantizer, which only
the ``llama-cpp`` extra brings; without it the file is left out with a log line that says so.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gemma_pipeline.export.llama_cpp import convert, quantize, runtime_available

logger = logging.getLogger(__name__)

#: The full-precision file every other one is measured against.
FULL_PRECISION = "f16"
CONVERTED = (FULL_PRECISION, "q8_0")
QUANTIZED = ("q4_k_m",)


#: Ollama's form of Gemma's chat template: Ollama renders from this, not from the GGUF's Jinja.
OLLAMA_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""


def ollama_modelfile(gguf_name: str) -> str:
    """An Ollama ``Modelfile`` for one GGUF: Gemma's turns, stopping at ``<end_of_turn>``."""
    return (
        f"FROM ./{gguf_name}\n"
        f'TEMPLATE """{OLLAMA_TEMPLATE}"""\n'
        'PARAMETER stop "<end_of_turn>"\n'
        "PARAMETER temperature 0\n"
    )


@dataclass(frozen=True)
class GgufFiles:
    """GGUF files written in a scratch folder; ``save_to`` moves them into the catalog's, with
    an Ollama ``Modelfile`` for the smallest."""

    scratch: Path
    names: dict[str, str]  # kind (f16, q8_0, q4_k_m) -> file name

    def save_to(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name in self.names.values():
                shutil.move(self.scratch / name, folder / name)
            smallest = min(self.names.values(), key=lambda name: (folder / name).stat().st_size)
            (folder / "Modelfile").write_text(ollama_modelfile(smallest), encoding="utf-8")
        finally:
            # Saved or not, the scratch goes: a save that failed on a full disk must not leave
            # the model's GGUF files behind in the temp folder (the next run converts anew).
            shutil.rmtree(self.scratch, ignore_errors=True)


def gguf_file_name(model_name: str, kind: str) -> str:
    return f"{model_name}-{kind}.gguf"


def files_in(folder: str | Path) -> dict[str, Path]:
    """The GGUF files of an export folder by kind, full precision first."""
    found = {path.stem.rsplit("-", 1)[-1]: path for path in Path(folder).glob("*.gguf")}
    return {kind: found[kind] for kind in (*CONVERTED, *QUANTIZED) if kind in found}


def export_gguf(
    merged_dir: str | Path, model_name: str, *, converter_dir: str | Path | None = None
) -> GgufFiles:
    """Convert the merged folder; the two conversions run side by side (each is mostly one
    core's numpy work)."""
    scratch = Path(tempfile.mkdtemp(prefix="gguf-export-"))
    names = {kind: gguf_file_name(model_name, kind) for kind in CONVERTED}
    logger.info("GGUF export of %s into %s", merged_dir, ", ".join(names.values()))
    with ThreadPoolExecutor(max_workers=len(CONVERTED)) as pool:
        jobs = [
            pool.submit(
                convert, merged_dir, scratch / names[kind], kind, converter_dir=converter_dir
            )
            for kind in CONVERTED
        ]
        for job in jobs:
            job.result()
    if runtime_available():
        for kind in QUANTIZED:
            names[kind] = gguf_file_name(model_name, kind)
            quantize(scratch / names[FULL_PRECISION], scratch / names[kind], kind)
    else:
        logger.warning(
            "%s left out: llama.cpp's quantizer comes with the llama-cpp extra "
            "(pip install -e '.[llama-cpp]')",
            ", ".join(QUANTIZED),
        )
    return GgufFiles(scratch, names)
