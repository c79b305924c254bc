"""Suite-wide fixtures: a tiny offline Gemma-style tokenizer and a tiny random Gemma 2 model;
for the export tests, tiny Gemma-2 and Gemma-3 folders with a real SentencePiece tokenizer.

Both are built in a few hundred milliseconds without any download, once per test session.
They are shared objects: copy (``copy.deepcopy``) before mutating the tokenizer.
"""

from __future__ import annotations

import os

# Set before anything imports huggingface_hub / wandb / kedro, which read them at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ["KEDRO_DISABLE_TELEMETRY"] = "1"

import copy
import io
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sentencepiece
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GenerationConfig,
    PreTrainedTokenizerFast,
)

from gemma_pipeline.modeling.chat_template import GEMMA_CHAT_TEMPLATE
from gemma_pipeline.modeling.loading import load_causal_lm, load_tokenizer

#: Special tokens with Gemma's ids for the first four; the turn markers follow.
TINY_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
TINY_VOCAB_SIZE = 768
TINY_SEED = 0

# Byte-level BPE trained on this text: any string round-trips exactly (no <unk>), while the
# words that prompts and answers use most become single tokens.
_TINY_CORPUS = [
    "the of and to a in is it that for on with as was are be by this at from or an",
    "which what who when where why how question answer choice choices correct option options",
    "A B C D E F G H I J Answer: The answer is (A) (B) (C) (D) (E)",
    "user model assistant system Question: Options: Rationale: Let's think step by step.",
    "math number sum product difference total percent ratio speed time distance cost price",
    "history biology chemistry physics law economics philosophy computer science medicine",
    "0 1 2 3 4 5 6 7 8 9 10 12 15 20 25 50 100 1000 3.14 1/2 -1 +2 = < > % $ x y z",
    ". , ; : ! ? ' \" ( ) [ ] { } / \\ * & # @ ^ _ ~ | -",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "If a train travels 60 km in 1.5 hours, what is its average speed? It is 40 km/h.",
    "Which of the following is true about the capital of France? Paris is the capital.",
]


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer with Gemma's special tokens and bos-prepending."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TINY_CORPUS * 4, trainer=trainer)
    bos_id = tokenizer.token_to_id("<bos>")
    # Gemma's own post-processor: one <bos> in front, never an <eos> at the end.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A",
        pair="<bos> $A <bos>:1 $B:1",
        special_tokens=[("<bos>", bos_id)],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        padding_side="right",
        model_max_length=512,
    )
    wrapped.chat_template = GEMMA_CHAT_TEMPLATE
    return wrapped


def build_tiny_model(tokenizer: Any) -> Gemma2ForCausalLM:
    """A 2-layer Gemma 2 with random weights and both soft-caps, sized for the tiny vocab."""
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        sliding_window=32,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    torch.manual_seed(TINY_SEED)
    model = Gemma2ForCausalLM(config)
    # Like Gemma's -it checkpoints: generation also stops at <end_of_turn>.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with the tiny tokenizer saved by ``save_pretrained`` (chat template included)."""
    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny tokenizer as the pipeline loads it (``load_tokenizer``). Do not mutate."""
    return load_tokenizer(
        str(tiny_tokenizer_dir), embedded_cache_dir=tmp_path_factory.mktemp("embedded-cache")
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random ``Gemma2ForCausalLM`` (safetensors) and the tiny tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-gemma2")
    build_tiny_model(tiny_tokenizer).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


#: format_prompts parameters of the prompt tests: one template per task.
PROMPT_FORMAT = {
    "templates": {
        "mmlu": {"user": "Question about {subject}.\n{question}\n{options}\nAnswer:"},
        "mathqa": {"user": "Solve.\n{question}\n{options}"},
    },
}


@pytest.fixture
def prompt_format() -> dict[str, Any]:
    return copy.deepcopy(PROMPT_FORMAT)


@pytest.fixture
def two_questions() -> pd.DataFrame:
    """An MMLU training question without a subject and a Math-QA test question."""
    return pd.DataFrame(
        {
            "row_id": ["m1", "q1"],
            "source": ["mmlu", "mathqa"],
            "task": ["mmlu", "mathqa"],
            "split": ["train", "test"],
            "subject": ["", "gain"],
            "question": ["What is 2 + 2?", "A train goes 10 km in 2 h. Speed?"],
            "choices": [["3", "4", "5", "6"], ["2", "5", "10", "20", "none"]],
            "answer": [1, 1],
            "rationale": [None, "10 / 2 = 5"],
        }
    )


# --- a real SentencePiece tokenizer, for llama.cpp's converter ---------------------------------
# llama.cpp's Gemma converter reads the SentencePiece tokenizer.model (the Gemma-2 path needs
# it), so the export tests train a small one, with Gemma's id layout (0 pad, 1 eos, 2 bos, 3 unk,
# 4 mask) and its turn markers, and build the HF tokenizer from it as the hub's folders hold it.

_SPM_SPECIAL = ["<mask>", "<start_of_turn>", "<end_of_turn>"]


def _train_sentencepiece() -> bytes:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_TINY_CORPUS * 4),
        model_writer=model,
        vocab_size=512,
        model_type="bpe",
        byte_fallback=True,  # as Gemma's: any text encodes, no <unk>
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=_SPM_SPECIAL,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


@pytest.fixture(scope="session")
def sentencepiece_tokenizer_dir(tmp_path_factory) -> Path:
    """tokenizer.model + tokenizer_config.json: what AutoTokenizer converts from."""
    folder = tmp_path_factory.mktemp("spm-tokenizer")
    (folder / "tokenizer.model").write_bytes(_train_sentencepiece())
    config = {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "add_bos_token": True,
        "add_eos_token": False,
        "extra_special_tokens": _SPM_SPECIAL[1:],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def _save_with_tokenizer(model: Any, tokenizer: Any, spm_dir: Path, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copyfile(spm_dir / "tokenizer.model", folder / "tokenizer.model")
    return folder


@pytest.fixture(scope="session")
def spm_tokenizer(sentencepiece_tokenizer_dir) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(sentencepiece_tokenizer_dir)
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="session")
def gemma2_dir(spm_tokenizer, sentencepiece_tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny random Gemma-2 (both softcaps, sliding window) with the SentencePiece tokenizer."""
    model = build_tiny_model(spm_tokenizer)
    folder = tmp_path_factory.mktemp("gemma2-spm")
    return _save_with_tokenizer(model, spm_tokenizer, sentencepiece_tokenizer_dir, folder)


@pytest.fixture(scope="session")
def gemma3_dir(spm_tokenizer, sentencepiece_tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny random Gemma-3 text model (the embedded default's architecture)."""
    config = Gemma3TextConfig(
        vocab_size=len(spm_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=32,
        max_position_embeddings=512,
        pad_token_id=spm_tokenizer.pad_token_id,
        bos_token_id=spm_tokenizer.bos_token_id,
        eos_token_id=spm_tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    torch.manual_seed(TINY_SEED)
    model = Gemma3ForCausalLM(config)
    folder = tmp_path_factory.mktemp("gemma3-spm")
    return _save_with_tokenizer(model, spm_tokenizer, sentencepiece_tokenizer_dir, folder)


def _make_adapter(model_dir: Path, folder: Path) -> Path:
    """A non-zero LoRA adapter (init_lora_weights=False), so merging changes the weights."""
    torch.manual_seed(0)
    model = load_causal_lm(str(model_dir), embedded_cache_dir="x", dtype="float32")
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def make_adapter():
    """``make_adapter(model_dir, folder)``: a random non-zero LoRA adapter for that model."""
    return _make_adapter


# --- a project with a run's artifacts, for the console script --------------------------------

#: The two runs the tiny project holds: the older has an adapter only, the newer everything.
OLD_RUN, NEW_RUN = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"


def write_project(root: Path, model_dir: Path) -> Path:
    """A Kedro project: this repository's conf/base, with the base model at ``model_dir``
    (in float32: a tiny random model's greedy tokens would flip on bf16 rounding)."""
    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "conf" / "base", root / "conf" / "base")
    # bitsandbytes' 4-bit CPU kernels need dimensions a tiny model does not have.
    (root / "conf" / "local").mkdir()
    (root / "conf" / "local" / "parameters.yml").write_text(
        "train_qlora:\n  quantization:\n    load_in_4bit: false\n"
    )
    (root / "pyproject.toml").write_text(
        '[tool.kedro]\npackage_name = "gemma_pipeline"\nproject_name = "tiny"\n'
        'kedro_init_version = "1.7.0"\n'
    )
    (root / "conf" / "base" / "parameters.yml").write_text(
        f"model:\n  name_or_path: {model_dir}\n  embedded_cache_dir: unused\n"
        "  dtype: float32\n  attn_implementation: eager\n"
    )
    return root


@pytest.fixture(scope="session")
def tiny_project(gemma3_dir, tmp_path_factory) -> Path:
    """A project on the tiny Gemma-3 whose runs hold an adapter (both), and the merged folder
    and GGUF files (the newer), where the catalog puts them."""
    from gemma_pipeline.config import ModelParams
    from gemma_pipeline.export.gguf import export_gguf
    from gemma_pipeline.export.merged import merge_adapter

    root = write_project(tmp_path_factory.mktemp("project"), gemma3_dir)
    models = root / "data" / "06_models"
    for run in (OLD_RUN, NEW_RUN):
        _make_adapter(gemma3_dir, models / "adapter" / run / "adapter")
    merged = merge_adapter(
        ModelParams(name_or_path=str(gemma3_dir)),
        models / "adapter" / NEW_RUN / "adapter",
        models / "merged_model" / NEW_RUN / "merged_model",
        dtype="float32",
    )
    export_gguf(merged, "gemma-2-2b-it-mmlu-qlora").save_to(models / "gguf" / NEW_RUN / "gguf")
    return root


@pytest.fixture(scope="session")
def project_runs() -> tuple[str, str]:
    """The versions of ``tiny_project``'s runs: (older, newer)."""
    return OLD_RUN, NEW_RUN


@pytest.fixture(scope="session")
def make_project():
    """``make_project(root, model_dir)``: a project with conf/base and no artifacts."""
    return write_project


@pytest.fixture(scope="session")
def embedded_project(tmp_path_factory) -> Path:
    """A project whose run's GGUF is the embedded Gemma 3 270M base, exported as the export
    pipeline exports a merged model (q8_0), for the few end-to-end tests (``-m e2e``)."""
    from gemma_pipeline.export.llama_cpp import convert
    from gemma_pipeline.export.merged import MergedModel
    from gemma_pipeline.modeling.embedded import ensure_embedded_model

    repo = Path(__file__).resolve().parents[1]
    embedded = ensure_embedded_model(repo / "data" / "06_models" / "embedded_gemma3_270m")
    root = write_project(tmp_path_factory.mktemp("embedded-project"), embedded)
    folder = tmp_path_factory.mktemp("embedded-hf")
    model = load_causal_lm(str(embedded), embedded_cache_dir="x", dtype="float32")
    MergedModel(model, load_tokenizer(str(embedded), embedded_cache_dir="x"), None).save_to(folder)
    run = root / "data" / "06_models" / "gguf" / NEW_RUN / "gguf"
    run.mkdir(parents=True)
    convert(folder, run / "gemma3-270m-base-q8_0.gguf", "q8_0")
    return root


#: What shrinks the demo environment to a tiny run: the tiny Gemma-3, a few rows, two steps.
def tiny_run_params(model_dir: Path) -> dict[str, Any]:
    sample = {"loader": "sample"}
    return {
        "model": {"name_or_path": str(model_dir), "dtype": "float32"},
        "ingest": {
            "sources": {
                "mmlu": {**sample, "sample": {"train": 24, "validation": 4, "test": 16}},
                "mathqa": {**sample, "sample": {"train": 8, "validation": 4, "test": 8}},
            },
            "benchmarks": {
                "mmlu": {**sample, "sample": {"test": 8, "fewshot": 100}},
                "mathqa": {**sample, "sample": {"test": 4}},
                "gsm8k": {**sample, "sample": {"test": 2, "fewshot": 60}},
            },
        },
        "train_qlora": {"max_steps": 2, "logging_steps": 1, "save_steps": 2},
        "evaluate": {"max_benchmark_docs": 4, "max_batch_tokens": 4096},
        "export": {"checks": {"heldout_completions": 4, "quantized_min_top1_agreement": 0.01}},
        "tracking": {"mode": "disabled"},
    }


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_tiny_env(root: Path, model_dir: Path) -> None:
    """conf/tiny: conf/demo with ``tiny_run_params`` merged in, so that every later command
    (`kedro run`, `gemma-pipeline ... --env tiny`) sees the same configuration."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    overrides = tiny_run_params(model_dir)
    (root / "conf" / "tiny").mkdir(parents=True)
    for source in sorted((repo / "conf" / "demo").glob("*.yml")):
        content = yaml.safe_load(source.read_text()) or {}
        for key in list(overrides):
            if key in content:
                content = _deep_merge(content, {key: overrides.pop(key)})
        (root / "conf" / "tiny" / source.name).write_text(yaml.safe_dump(content))
    (root / "conf" / "tiny" / "parameters_tiny.yml").write_text(yaml.safe_dump(overrides))


@pytest.fixture(scope="session")
def tiny_run(gemma3_dir, tmp_path_factory) -> Path:
    """A project after one whole `kedro run --env tiny` (conf/demo on the tiny Gemma-3): every
    artifact (questions, adapter, predictions, metrics, report, merged model, GGUF) of one run."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path_factory.mktemp("tiny-run")
    shutil.copytree(repo / "conf" / "base", root / "conf" / "base")
    write_tiny_env(root, gemma3_dir)
    (root / "conf" / "local").mkdir()
    shutil.copy(repo / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()  # Kedro wants the source folder; the package is the installed one
    bootstrap_project(root)
    with KedroSession.create(project_path=root, env="tiny") as session:
        session.run()
    return root


@pytest.fixture(scope="session")
def tiny_project_files(gemma3_dir):
    """``tiny_project_files(root)``: conf/base, conf/tiny (see ``tiny_run``) and an empty
    conf/local in ``root``, ready for a `kedro run --env tiny` there."""

    def write(root: Path) -> Path:
        repo = Path(__file__).resolve().parents[1]
        shutil.copytree(repo / "conf" / "base", root / "conf" / "base")
        write_tiny_env(root, gemma3_dir)
        (root / "conf" / "local").mkdir()
        shutil.copy(repo / "pyproject.toml", root / "pyproject.toml")
        (root / "src").mkdir()
        return root

    return write


# --- data-parallel launches ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def data_parallel_launch():
    """``data_parallel_launch(nproc, worker_args, cwd, env=None, launcher="torchrun")``:
    tests/data_parallel_worker.py with ``worker_args``, as ``nproc`` processes started by
    ``torchrun --standalone`` or by ``accelerate launch`` with the project's
    conf/accelerate/ddp.yaml (gloo on the CPU); one thread per process (2 processes on 2 cores).
    Returns the finished ``subprocess.CompletedProcess``."""
    repo = Path(__file__).resolve().parents[1]
    worker = repo / "tests" / "data_parallel_worker.py"

    def launch(
        nproc: int,
        worker_args: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        launcher: str = "torchrun",
    ) -> subprocess.CompletedProcess:
        if launcher == "torchrun":
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command += ["--nproc_per_node", str(nproc)]
        else:
            with socket.socket() as probe:  # a free port: other launches may hold 29500
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            command = [sys.executable, "-m", "accelerate.commands.launch"]
            command += ["--config_file", str(repo / "conf" / "accelerate" / "ddp.yaml")]
            command += ["--num_processes", str(nproc), "--main_process_port", str(port)]
        env = (os.environ if env is None else env) | {"OMP_NUM_THREADS": "1"}
        return subprocess.run(
            [*command, str(worker), *worker_args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    return launch
