"""llama.cpp's own tools: its HF → GGUF converter, its quantizer, and its runtime.

Nothing here is llama.cpp reimplemented. The converter (``convert_hf_to_gguf.py`` with its
``conversion/`` package and ``gguf-py``) comes from the one registry package that ships it: the
source archive of llama-cpp-python, pinned by version and sha256. ``install_converter``
extracts those files once into the Python environment (``python -m
gemma_pipeline.export.llama_cpp install``); export runs them as they are, in a subprocess.
Nothing is cloned or downloaded at run time.

The quantizer (K-quants such as q4_k_m) and the runtime that loads the GGUF files for the
checks are llama.cpp's C library through llama-cpp-python, the optional ``llama-cpp`` extra,
built from that same source archive by pip.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: The source archive the converter is taken from: the same release the ``llama-cpp`` extra
#: builds, so converter and runtime are one llama.cpp version.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_PYTHON_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_ARCHIVE_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
_VENDORED = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
#: What the converter needs from the archive: the script, its model classes and gguf-py.
_CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
_MARKER = "installed.json"

#: Outtypes the converter writes itself; K-quants need the quantizer.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
#: K-quants made by llama.cpp's quantizer, by llama.cpp's ftype name.
QUANTIZER_TYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M"}


class LlamaCppUnavailableError(RuntimeError):
    """A llama.cpp part the export needs is not installed; the message says how to install it."""


def default_converter_dir() -> Path:
    """Where ``install_converter`` puts the converter: inside the active Python environment."""
    return Path(sys.prefix) / "share" / "gemma-pipeline" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def converter_script(converter_dir: str | Path | None = None) -> Path:
    """Path of ``convert_hf_to_gguf.py``: in ``converter_dir`` (a llama.cpp checkout or what
    ``install_converter`` wrote), by default the environment's install.

    Raises:
        LlamaCppUnavailableError: nothing is installed there, with the command that installs it.
    """
    folder = Path(converter_dir) if converter_dir else default_converter_dir()
    script = folder / "convert_hf_to_gguf.py"
    if not script.is_file() or not (folder / "conversion").is_dir():
        raise LlamaCppUnavailableError(
            f"llama.cpp's converter is not installed at {folder}: run "
            "`python -m gemma_pipeline.export.llama_cpp install` once (it takes llama.cpp's "
            f"convert_hf_to_gguf.py from the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} source "
            "archive on PyPI), or set export.gguf.converter_dir to a llama.cpp checkout"
        )
    return script


def install_converter(
    target: str | Path | None = None, *, archive: str | Path | None = None
) -> Path:
    """Extract llama.cpp's converter from llama-cpp-python's source archive into ``target``.

    ``archive`` is a local copy of the archive; without it, pip downloads the pinned one from
    the package index. Either way its sha256 must be the pinned one. Written into a sibling
    folder and renamed into place, so an interrupted install leaves nothing half-written.
    """
    target = Path(target) if target else default_converter_dir()
    with tempfile.TemporaryDirectory() as scratch:
        if archive is None:
            archive = _download_archive(Path(scratch))
        archive = Path(archive)
        digest = _sha256(archive)
        if digest != LLAMA_CPP_PYTHON_SHA256:
            raise RuntimeError(
                f"{archive}: sha256 {digest} is not the pinned {LLAMA_CPP_PYTHON_SHA256} of "
                f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}"
            )
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            members = [
                member
                for member in tar.getmembers()
                if member.name.startswith(_VENDORED)
                and member.name.removeprefix(_VENDORED).startswith(_CONVERTER_PARTS)
                and (member.isfile() or member.isdir())
            ]
            for member in members:
                member.name = member.name.removeprefix(_VENDORED)
            tar.extractall(staging, members=members, filter="data")
        marker = {"llama_cpp_python": LLAMA_CPP_PYTHON_VERSION, "sha256": digest}
        (staging / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    converter_script(target)  # proves the layout is complete
    logger.info("llama.cpp's converter installed at %s", target)
    return target


def _download_archive(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--quiet", "--dest", str(folder), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"]
    subprocess.run(command, check=True)
    return folder / _ARCHIVE_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(
    model_dir: str | Path,
    outfile: str | Path,
    outtype: str,
    *,
    converter_dir: str | Path | None = None,
) -> Path:
    """Run llama.cpp's ``convert_hf_to_gguf.py`` on a transformers folder.

    It runs in a subprocess with its own ``gguf-py`` first on the path (the converter does this
    itself), so the installed ``gguf`` package never mixes with the converter's version.

    Raises:
        ValueError: ``outtype`` is not one the converter writes.
        RuntimeError: the converter failed; the message ends with what it printed last.
    """
    if outtype not in CONVERTER_TYPES:
        raise ValueError(f"the converter writes {CONVERTER_TYPES}, not {outtype!r}")
    script = converter_script(converter_dir)
    # Absolute: the converter runs in its own folder.
    model_dir, outfile = Path(model_dir).resolve(), Path(outfile).resolve()
    command = [sys.executable, str(script), str(model_dir), "--outfile", str(outfile)]
    command += ["--outtype", outtype]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=script.parent)
    if result.returncode != 0 or not outfile.is_file():
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise RuntimeError(f"llama.cpp's converter failed on {model_dir} ({outtype}):\n{tail}")
    return _written(outfile, started, "converter")


def _written(outfile: Path, started: float, tool: str) -> Path:
    size = outfile.stat().st_size / 2**20
    seconds = time.perf_counter() - started
    logger.info("  %s: %.0f MiB in %.1f s (llama.cpp's %s)", outfile.name, size, seconds, tool)
    return outfile


def runtime_available() -> bool:
    """Whether llama-cpp-python (llama.cpp's runtime and quantizer) is installed."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def require_runtime():
    """The ``llama_cpp`` module, or an error that says which extra installs it."""
    try:
        import llama_cpp
    except ImportError as error:
        raise LlamaCppUnavailableError(
            "llama.cpp's runtime is not installed: pip install -e '.[llama-cpp]' (builds "
            f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} from source, about 11 min on 2 cores)"
        ) from error
    return llama_cpp


def quantize(source: str | Path, outfile: str | Path, kind: str) -> Path:
    """Quantize a GGUF with llama.cpp's own quantizer (``llama_model_quantize``).

    Tensors whose rows a K-quant cannot split (not a multiple of 256) get llama.cpp's own
    fallback type, as ``llama-quantize`` does.
    """
    if kind not in QUANTIZER_TYPES:
        raise ValueError(f"the quantizer makes {tuple(QUANTIZER_TYPES)}, not {kind!r}")
    llama_cpp = require_runtime()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZER_TYPES[kind])
    params.nthread = os.cpu_count() or 1
    outfile = Path(outfile)
    started = time.perf_counter()
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(outfile).encode(), ctypes.byref(params)
    )
    if status != 0 or not outfile.is_file():
        raise RuntimeError(f"llama.cpp's quantizer failed ({status}) on {source} → {kind}")
    return _written(outfile, started, "quantizer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gemma_pipeline.export.llama_cpp",
        description="Install llama.cpp's HF → GGUF converter into this Python environment.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser(
        "install",
        help=f"extract the converter from llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}'s "
        "source archive (downloaded with pip unless --archive is given)",
    )
    install.add_argument("--archive", type=Path, help="a local copy of the source archive")
    install.add_argument("--target", type=Path, help=f"default: {default_converter_dir()}")
    commands.add_parser("where", help="print where the converter is installed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "install":
            print(install_converter(args.target, archive=args.archive))
        else:
            print(converter_script().parent)
    except (LlamaCppUnavailableError, RuntimeError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
