"""Every key of every conf/base/parameters_*.yml, misspelled, mistyped and out of range.

Each mutation must fail the validation every run starts with (``ParameterValidationHook``),
with a message naming the mutated key in full; a few go through ``kedro run`` itself, which
must fail in under 5 s, before any model loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types
import pytest
import yaml
from pydantic import BaseModel

from gemma_pipeline.config import SECTIONS, ParameterError, validate_all

ROOT = Path(__file__).resolve().parents[1]
PARAMETER_FILES = sorted((ROOT / "conf" / "base").glob("parameters*.yml"))

Path_ = tuple[str, ...]


def base_parameters() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in PARAMETER_FILES:
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def leaves(tree: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """(dotted path, value) of every leaf; lists and empty mappings are leaves."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, (*path, str(key)))
    else:
        yield path, tree


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def declared(path: Path_) -> tuple[Any, list[Any]]:
    """The annotation a leaf is validated against, and its constraints (Gt, Ge, Lt, Le...)."""
    annotation: Any = SECTIONS[path[0]]
    constraints: list[Any] = []
    for part in path[1:]:
        annotation = _strip_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields[part]
            annotation, constraints = info.annotation, list(info.metadata)
        elif typing.get_origin(annotation) is dict:
            annotation, constraints = typing.get_args(annotation)[1], []
        else:
            raise AssertionError(f"{'.'.join(path)}: no declared field for {part!r}")
    annotation = _strip_optional(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        constraints += extra
    return annotation, constraints


def misspelled(key: str) -> str:
    return key[:-1] + key[-1] * 2 if len(key) > 1 else key + "_"


def mistyped(annotation: Any) -> Any:
    """A value of another type than the declared one."""
    if annotation is bool:
        return "maybe"
    if annotation in (int, float):
        return "many"
    if annotation is str or typing.get_origin(annotation) is Literal:
        return ["a", "list"]
    return 12345  # lists, mappings, sections


def out_of_range(annotation: Any, constraints: list[Any]) -> Any | None:
    """A value the declared range or choices exclude; None where there is none to break."""
    if typing.get_origin(annotation) is Literal:
        return "not-one-of-the-choices"
    for constraint in constraints:
        if isinstance(constraint, annotated_types.Gt):
            return constraint.gt
        if isinstance(constraint, annotated_types.Ge):
            return constraint.ge - 1
        if isinstance(constraint, annotated_types.Lt):
            return constraint.lt
        if isinstance(constraint, annotated_types.Le):
            return constraint.le + 1
    return None


def with_value(params: dict, path: Path_, value: Any) -> dict:
    mutated = yaml.safe_load(yaml.safe_dump(params))  # a deep copy
    node = mutated
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return mutated


def with_key_renamed(params: dict, path: Path_) -> tuple[dict, Path_]:
    mutated = yaml.safe_load(yaml.safe_dump(params))
    node = mutated
    for part in path[:-1]:
        node = node[part]
    new = misspelled(path[-1])
    node[new] = node.pop(path[-1])
    return mutated, (*path[:-1], new)


def failure(params: dict) -> str:
    with pytest.raises(ParameterError) as error:
        validate_all(params)
    return str(error.value)


BASE = base_parameters()
LEAVES = [path for path, _ in leaves(BASE)]


def test_the_base_parameters_are_valid():
    validate_all(BASE)
    assert len(LEAVES) > 80  # every file's keys are enumerated


@pytest.mark.parametrize("path", LEAVES, ids=".".join)
def test_a_misspelled_key_fails_naming_it(path):
    mutated, new_path = with_key_renamed(BASE, path)
    assert ".".join(new_path) in failure(mutated)


@pytest.mark.parametrize("path", LEAVES, ids=".".join)
def test_a_mistyped_value_fails_naming_its_key(path):
    annotation, _ = declared(path)
    assert ".".join(path) in failure(with_value(BASE, path, mistyped(annotation)))


NUMBERS_WITHOUT_RANGE: list[str] = []


@pytest.mark.parametrize("path", LEAVES, ids=".".join)
def test_an_out_of_range_value_fails_naming_its_key(path):
    annotation, constraints = declared(path)
    bad = out_of_range(annotation, constraints)
    if bad is None:
        # Free text (paths, names, templates) and switches have no range; numbers must.
        assert annotation not in (int, float), f"{'.'.join(path)}: a number with no range"
        return
    assert ".".join(path) in failure(with_value(BASE, path, bad))


@pytest.mark.parametrize(
    "override, key",
    [
        ("train_qlora.lora.rr=8", "train_qlora.lora.rr"),
        ("train_qlora.learning_rate=fast", "train_qlora.learning_rate"),
        ("evaluate.max_batch_tokens=0", "evaluate.max_batch_tokens"),
    ],
)
def test_kedro_run_fails_fast_before_any_model_loads(override, key):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--params", override],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert key in output and "ParameterError" in output
    assert seconds < 5, f"{seconds:.1f} s"
    assert "Running node" not in output and "Loading checkpoint" not in output
