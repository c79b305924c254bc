"""llama.cpp's converter comes from llama-cpp-python's pinned source archive, and nowhere else."""

from __future__ import annotations

import io
import tarfile

import pytest

from gemma_pipeline.export import llama_cpp
from gemma_pipeline.export.llama_cpp import (
    LlamaCppUnavailableError,
    convert,
    converter_script,
    install_converter,
)


def test_a_missing_converter_names_the_command_that_installs_it(tmp_path):
    with pytest.raises(LlamaCppUnavailableError) as error:
        converter_script(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "python -m gemma_pipeline.export.llama_cpp install" in message


def _archive(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_archive_that_is_not_the_pinned_one_is_refused(tmp_path):
    vendored = f"llama_cpp_python-{llama_cpp.LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    archive = _archive(
        tmp_path / "llama_cpp_python.tar.gz",
        {vendored + "convert_hf_to_gguf.py": "print('not llama.cpp')"},
    )
    with pytest.raises(RuntimeError, match="is not the pinned"):
        install_converter(tmp_path / "target", archive=archive)
    assert not (tmp_path / "target").exists()


def test_the_installed_converter_is_llama_cpps_own():
    """What `python -m gemma_pipeline.export.llama_cpp install` put into this environment."""
    script = converter_script()
    assert (script.parent / "conversion" / "gemma.py").is_file()
    assert (script.parent / "gguf-py" / "gguf" / "gguf_writer.py").is_file()
    marker = (script.parent / "installed.json").read_text()
    assert llama_cpp.LLAMA_CPP_PYTHON_SHA256 in marker


def test_k_quants_are_not_the_converters_to_make(tmp_path):
    with pytest.raises(ValueError, match="q4_k_m"):
        convert(tmp_path, tmp_path / "x.gguf", "q4_k_m")


def test_a_converter_failure_says_what_it_printed(tmp_path, tiny_model_dir):
    """A folder llama.cpp's converter cannot read fails with its own last lines."""
    (tmp_path / "config.json").write_text('{"architectures": ["NoSuchModelForCausalLM"]}')
    with pytest.raises(RuntimeError, match=r"llama\.cpp's converter failed") as error:
        convert(tmp_path, tmp_path / "x.gguf", "f16")
    assert "NoSuchModelForCausalLM" in str(error.value)


def test_the_extra_builds_the_release_the_converter_comes_from():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["llama-cpp"]
    assert extra == [f"llama-cpp-python[server]=={llama_cpp.LLAMA_CPP_PYTHON_VERSION}"]
    ci = (Path(__file__).parents[2] / ".ci" / "run").read_text()
    assert f'"llama-cpp-python[server]=={llama_cpp.LLAMA_CPP_PYTHON_VERSION}"' in ci
