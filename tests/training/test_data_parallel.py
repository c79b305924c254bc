"""Issue 15: train_qlora data-parallel (DDP). How each optimizer step's examples are shared by
the processes, and a real 2-process launch (accelerate launch with conf/accelerate/ddp.yaml,
gloo, the tiny model) that must train the adapter of one process on the same global batch, and
that is killed and resumed to the adapter of the uninterrupted launch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from datasets import Dataset, load_from_disk
from safetensors.torch import load_file

from gemma_pipeline.config import ModelParams, TrainQloraParams
from gemma_pipeline.prompting import IGNORE_INDEX
from gemma_pipeline.training.data import (
    CompletionCollator,
    GroupShuffleSampler,
    PackingCollator,
    StepBatches,
    TrainRows,
    rows_digest,
)
from gemma_pipeline.training.recipe import micro_batching
from gemma_pipeline.training.run import train_adapter

#: Equal within float32 rounding. Measured: 0.0 (the two processes' gradients are summed in the
#: order one process accumulates them, and the x2 / 2 of the all-reduce mean is exact).
ADAPTER_TOLERANCE = 1e-6


def _processes_batches(rows, examples_per_step, micro_batch, processes, epoch=0):
    """Each process's micro-batches, dealt by accelerate's own BatchSamplerShard."""
    found = []
    for index in range(processes):
        batches = StepBatches(
            GroupShuffleSampler([row // 4 for row in range(rows)], seed=3),
            examples_per_step,
            micro_batch,
            processes,
        )
        batches.set_epoch(epoch)
        found.append(list(BatchSamplerShard(batches, processes, index)))
    return found


@pytest.mark.parametrize(
    ("rows", "examples_per_step", "micro_batch", "processes"),
    [
        (33, 8, 4, 2),  # an epoch's last step of 1 row: process 1 gets a filler
        (64, 32, 32, 2),  # the default recipe: one micro-batch of 16 per process
        (70, 32, 4, 2),  # the padded recipe: 4 micro-batches of 4 per process
        (70, 32, 32, 3),  # 32 over 3 processes: 11, 11, 10
        (37, 8, 1, 4),  # micro-batches of one row, a 5-row last step over 4 processes
        (32, 32, 8, 1),  # one process: the micro-batches of the recipe
    ],
)
def test_processes_share_each_step_as_one_process_would_see_it(
    rows, examples_per_step, micro_batch, processes
):
    one = _processes_batches(rows, examples_per_step, micro_batch, 1)[0]
    shares = _processes_batches(rows, examples_per_step, micro_batch, processes)
    recipe = TrainQloraParams(
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=examples_per_step // micro_batch,
    )
    accumulation = micro_batching(recipe, processes)[1]  # what the Trainer is told
    assert len({len(share) for share in shares}) == 1  # every process as many micro-batches

    def steps(batches, per_step):
        return [batches[k : k + per_step] for k in range(0, len(batches), per_step)]

    one_steps = steps(one, -(-examples_per_step // micro_batch))
    share_steps = [steps(share, accumulation) for share in shares]
    assert len(one_steps) == -(-rows // examples_per_step)
    seen = []
    for k, expected in enumerate(one_steps):
        trained = [i for share in share_steps for batch in share[k] for i in batch if i < rows]
        fillers = [i for share in share_steps for batch in share[k] for i in batch if i >= rows]
        assert sorted(trained) == sorted(i for batch in expected for i in batch), k
        assert all(batch for share in share_steps for batch in share[k])  # none empty
        # A filler only where the step has fewer rows than micro-batches.
        assert len(fillers) == max(0, processes * len(share_steps[0][k]) - len(trained))
        seen += trained
    assert sorted(seen) == list(range(rows))  # every row once in the epoch
    # Where every question has 4 rotations and a step holds whole questions, no question's
    # rotations span two steps (elsewhere they do as often as for one process: the same steps).
    step_of = {i: k for k, step in enumerate(one_steps) for batch in step for i in batch}
    if examples_per_step % 4 == 0 and rows % 4 == 0:
        assert all(step_of[i] == step_of[i - i % 4] for i in range(rows))
    # Another epoch, another order, the same sharing.
    assert _processes_batches(rows, examples_per_step, micro_batch, processes, epoch=1) != shares


@pytest.mark.parametrize(
    ("recipe", "micro", "accumulation", "processes", "expected"),
    [
        ("packed", 32, 1, 1, (32, 1)),
        ("packed", 32, 1, 2, (16, 1)),  # half the micro-batch each
        ("packed", 32, 1, 8, (4, 1)),
        ("packed", 32, 1, 3, (11, 1)),  # 11 + 11 + 10
        ("packed", 8, 4, 2, (8, 2)),  # half the accumulation each
        ("padded", 32, 1, 1, (4, 8)),
        ("padded", 32, 1, 2, (4, 4)),
        ("padded", 32, 1, 16, (2, 1)),
    ],
)
def test_the_step_keeps_its_32_examples_whatever_the_processes(
    recipe, micro, accumulation, processes, expected
):
    params = TrainQloraParams(
        recipe=recipe, per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation
    )
    assert params.examples_per_step == 32
    assert micro_batching(params, processes) == expected
    micro_batch, per_process = expected
    assert micro_batch * per_process * processes >= 32 > (micro_batch * per_process - 1) * processes


def test_a_filler_row_trains_nothing(tiny_tokenizer):
    rows = Dataset.from_list(_rows(tiny_tokenizer, questions=1, rotations=2))
    train_rows = TrainRows(rows)
    assert len(train_rows) == 2 and train_rows[1] == rows[1]
    filler = train_rows[2 + 1]  # row 1 again, as a filler
    assert filler["input_ids"] == rows[1]["input_ids"]
    for collate in (CompletionCollator(0), PackingCollator(0)):
        batch = collate([filler])
        assert (batch["labels"] == IGNORE_INDEX).all()
        assert (collate([train_rows[1]])["labels"] != IGNORE_INDEX).any()


def test_the_rows_digest_is_the_content_not_the_storage(tiny_tokenizer, tmp_path):
    rows = Dataset.from_list(_rows(tiny_tokenizer, questions=3))
    rows.save_to_disk(tmp_path / "rows")
    assert rows_digest(load_from_disk(tmp_path / "rows")) == rows_digest(rows)
    assert rows_digest(rows.select(range(4))) == rows_digest(Dataset.from_dict(rows[:4]))
    reordered = rows.select([1, 0, *range(2, len(rows))])
    changed = rows.map(
        lambda row, i: row | ({"labels": row["input_ids"]} if i == 5 else {}), with_indices=True
    )
    assert len({rows_digest(rows), rows_digest(reordered), rows_digest(changed)}) == 3


def _rows(tokenizer, questions=8, rotations=4, extra=0, seed=0):
    """Prompts of random tokens, completions that start with B; ``extra`` questions of one row."""
    generator = torch.Generator().manual_seed(seed)
    letters = [tokenizer.convert_tokens_to_ids(letter) for letter in "AB"]
    shapes = [rotations] * questions + [1] * extra
    rows = []
    for question, copies in enumerate(shapes):
        for _ in range(copies):
            prompt = [tokenizer.bos_token_id]
            prompt += torch.randint(10, len(tokenizer), (10,), generator=generator).tolist()
            completion = [letters[1], letters[0], tokenizer.eos_token_id]
            rows.append(
                {
                    "input_ids": prompt + completion,
                    "attention_mask": [1] * (len(prompt) + len(completion)),
                    "labels": [IGNORE_INDEX] * len(prompt) + completion,
                    "prompt_length": len(prompt),
                    "question_id": f"q{question}",
                }
            )
    return rows


def _params(checkpoint_dir: Path, lora_dropout: float = 0.1) -> dict:
    return dict(
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=8,
        save_steps=3,
        logging_steps=1,
        learning_rate=5e-3,
        checkpoint_dir=str(checkpoint_dir),
        quantization={"load_in_4bit": False},
        lora={"r": 4, "alpha": 8, "dropout": lora_dropout},
        gradient_checkpointing=True,
    )


def test_two_processes_train_the_one_process_adapter_and_resume_exactly(
    tmp_path, tiny_model_dir, tiny_tokenizer, data_parallel_launch
):
    # 33 rows, 8 a step: 5 steps an epoch, the 5th of one row (process 1 trains a filler).
    rows = Dataset.from_list(_rows(tiny_tokenizer, extra=1))
    assert len(rows) == 33
    rows.save_to_disk(tmp_path / "rows")
    run = tmp_path / "run"
    run.mkdir()
    spec = {
        "model": str(tiny_model_dir),
        "rows": str(tmp_path / "rows"),
        "out": str(run),
        "runs": [
            # Against one process: LoRA dropout off, since each process draws its own masks.
            {"name": "plain", "params": _params(run / "plain", lora_dropout=0.0)},
            # Resumed against uninterrupted, with dropout: the RNG states must come back too.
            # Killed in step 8, resumed from the step-6 checkpoint, one step into epoch 1.
            {"name": "whole", "params": _params(run / "whole")},
            {"name": "resumed", "params": _params(run / "resumed"), "interrupt_at": 8},
        ],
    }
    # accelerate's launcher with the project's config (the Kedro run's test uses torchrun).
    worker_args = [str(tmp_path), str(run), "train", json.dumps(spec)]
    result = data_parallel_launch(2, worker_args, cwd=tmp_path, launcher="accelerate")
    assert result.returncode == 0, result.stderr[-4000:]
    history = {
        name: json.loads((run / name / "history.json").read_text())
        for name in ("plain", "whole", "resumed")
    }
    setup = history["plain"]["setup"]
    assert (setup["processes"], setup["examples_per_step"]) == (2, 8)
    assert (setup["micro_batch"], setup["gradient_accumulation_steps"]) == (4, 1)  # per process

    one, one_history = train_adapter(
        rows,
        TrainQloraParams.model_validate(_params(tmp_path / "one", lora_dropout=0.0)),
        ModelParams(name_or_path=str(tiny_model_dir)),
    )
    one.save_pretrained(tmp_path / "one")
    difference = _max_difference(tmp_path / "one", run / "plain" / "adapter")
    print(f"max abs difference of the adapters, 2 processes vs 1: {difference:.3g}")
    assert difference <= ADAPTER_TOLERANCE
    one_losses = [entry["loss"] for entry in one_history["log_history"] if "loss" in entry]
    assert len(one_losses) == 8
    assert history["plain"]["losses"] == pytest.approx(one_losses, abs=1e-6)

    assert history["resumed"]["resumed_from"].endswith("checkpoint-6")
    assert history["resumed"]["global_steps"] == 8
    difference = _max_difference(run / "whole" / "adapter", run / "resumed" / "adapter")
    print(f"max abs difference of the adapters, resumed vs whole (2 processes): {difference:.3g}")
    assert difference <= ADAPTER_TOLERANCE
    assert history["resumed"]["losses"] == pytest.approx(history["whole"]["losses"], abs=1e-6)

    # Rank 0 wrote the checkpoints, every process's RNG state included; rank 1 nothing at all.
    checkpoint = Path(history["resumed"]["resumed_from"])
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoint.iterdir()}
    writes = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    assert writes[1] == []
    assert any(str(checkpoint / "trainer_state.json") in write for write in writes[0])
    assert any(str(run / "resumed" / "adapter") in write for write in writes[0])


def _max_difference(expected_folder: Path, got_folder: Path) -> float:
    expected = load_file(expected_folder / "adapter_model.safetensors")
    got = load_file(got_folder / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    return max((got[name] - expected[name]).abs().max().item() for name in expected)
