import re
from collections import Counter

import pandas as pd
import pytest

from gemma_pipeline.sources import load_local, normalize
from gemma_pipeline.sources import sample as S

SIZES = S.DEFAULT_SIZES


@pytest.fixture(scope="module")
def mmlu_raw() -> dict[str, pd.DataFrame]:
    return {split: S.generate_mmlu_raw(split, n, seed=0) for split, n in SIZES.items()}


@pytest.fixture(scope="module")
def mathqa_raw() -> dict[str, pd.DataFrame]:
    return {split: S.generate_mathqa_raw(split, n, seed=0) for split, n in SIZES.items()}


def test_mmlu_raw_layouts(mmlu_raw):
    train = mmlu_raw["train"]
    assert list(train.columns) == ["train"]
    assert len(train) == SIZES["train"]
    assert {frozenset(struct) for struct in train["train"]} == {
        frozenset({"question", "subject", "choices", "answer"})
    }
    assert {row["subject"] for row in train["train"]} == {""}
    for split in ("validation", "test"):
        frame = mmlu_raw[split]
        assert list(frame.columns) == ["question", "subject", "choices", "answer"]
        assert len(frame) == SIZES[split]
        assert (frame["subject"] != "").all()
        assert frame["choices"].map(len).eq(4).all()
        assert frame["answer"].between(0, 3).all()
        # Several subjects, none dominating.
        assert frame["subject"].nunique() >= 5
        assert frame["subject"].value_counts(normalize=True).max() < 0.5


def test_mathqa_raw_layout(mathqa_raw):
    for split, frame in mathqa_raw.items():
        assert list(frame.columns) == list(S.MATHQA_COLUMNS)
        assert len(frame) == SIZES[split]
        assert (
            frame["options"].str.match(r"^a \) .+ , b \) .+ , c \) .+ , d \) .+ , e \) .+$").all()
        )
        assert frame["correct"].isin(list("abcde")).all()
        assert set(frame["category"]) <= {
            "general",
            "gain",
            "physics",
            "geometry",
            "probability",
            "other",
        }
    assert mathqa_raw["train"]["category"].nunique() == 6


@pytest.mark.parametrize("task", ["mmlu", "mathqa"])
@pytest.mark.parametrize("split", S.SAMPLE_SPLITS)
def test_sample_rows_normalize_with_zero_rejects(task, split, mmlu_raw, mathqa_raw):
    raw = (mmlu_raw if task == "mmlu" else mathqa_raw)[split]
    accepted, rejected = normalize(task, raw, source=task, split=split, origin="sample")
    assert rejected.empty, rejected["reason"].tolist()[:5]
    assert len(accepted) == len(raw)
    if task == "mathqa":
        assert accepted["rationale"].notna().all()
        assert not accepted["rationale"].str.startswith('"').any()


def test_mathqa_answers_are_the_computed_ones(mathqa_raw):
    """The correct option must hold the number the rationale computes."""
    frame = pd.concat(mathqa_raw.values(), ignore_index=True)
    accepted, _ = normalize("mathqa", frame, source="m", split="all", origin="s")
    assert len(accepted) == len(frame)
    for _, row in accepted.iterrows():
        correct = row["choices"][row["answer"]]
        number = re.search(r"[\d,./]+", correct).group().strip(".")
        assert number in row["rationale"], (correct, row["rationale"])
        assert len(set(row["choices"])) == 5


def test_same_seed_same_frames_other_seed_different():
    for generate in (S.generate_mmlu_raw, S.generate_mathqa_raw):
        for split in S.SAMPLE_SPLITS:
            first = generate(split, 50, seed=3)
            pd.testing.assert_frame_equal(first, generate(split, 50, seed=3))
            assert not first.equals(generate(split, 50, seed=4))


def test_sample_files_are_byte_identical_for_a_seed(tmp_path):
    sizes = {"train": 30, "validation": 10, "test": 10}
    one = S.write_sample_files(tmp_path / "one", seed=1, sizes=sizes)
    two = S.write_sample_files(tmp_path / "two", seed=1, sizes=sizes)
    assert sorted(one) == sorted(
        f"{task}_{split}" for task in ("mmlu", "mathqa") for split in sizes
    )
    for name, path in one.items():
        assert path.name == f"{name}.jsonl"
        assert path.read_bytes() == two[name].read_bytes()


def test_written_files_load_and_normalize_cleanly(tmp_path):
    sizes = {"train": 40, "validation": 20, "test": 20}
    for name, path in S.write_sample_files(tmp_path, seed=0, sizes=sizes).items():
        task, split = name.split("_", 1)
        raw = load_local(path)
        accepted, rejected = normalize(task, raw, source=task, split=split, origin=str(path))
        assert rejected.empty and len(accepted) == sizes[split]


def test_command_line_writes_files(tmp_path, capsys):
    assert S.main(["--out", str(tmp_path), "--seed", "0", "--train", "8", "--validation", "4",
                   "--test", "4"]) == 0  # fmt: skip
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "mathqa_test.jsonl",
        "mathqa_train.jsonl",
        "mathqa_validation.jsonl",
        "mmlu_test.jsonl",
        "mmlu_train.jsonl",
        "mmlu_validation.jsonl",
    ]
    assert len((tmp_path / "mmlu_train.jsonl").read_text(encoding="utf-8").splitlines()) == 8
    assert "mmlu_train" in capsys.readouterr().out


@pytest.mark.parametrize("seeds", [(0, 0), (0, 1), (7, 2)])
def test_splits_never_share_a_fact(seeds):
    """Train drawn with one seed and eval splits drawn with another stay fact-disjoint."""
    train_seed, eval_seed = seeds
    mmlu_keys = {item.key for item in S.generate_mmlu_items("train", 400, train_seed)}
    math_keys = {item.key for item in S.generate_mathqa_items("train", 400, train_seed)}
    for split in ("validation", "test"):
        assert not mmlu_keys & {item.key for item in S.generate_mmlu_items(split, 100, eval_seed)}
        assert not math_keys & {item.key for item in S.generate_mathqa_items(split, 100, eval_seed)}
    validation = {item.key for item in S.generate_mmlu_items("validation", 100, eval_seed)}
    test = {item.key for item in S.generate_mmlu_items("test", 100, eval_seed)}
    assert not validation & test


def test_fact_partition_covers_every_fact_once():
    partition = S.mmlu_partition()
    keys = [fact.key for facts in partition.values() for fact in facts]
    assert len(keys) == len(set(keys)) == len(S.mmlu_facts())
    for facts in partition.values():
        assert len({fact.subject for fact in facts}) == 6  # every subject in every split


def _capital_countries(items: list[S.SampleItem]) -> set[str]:
    return {m.group(1) for item in items if (m := re.search(r"capital of (.+)\?$", item.question))}


def _elements(items: list[S.SampleItem]) -> set[str]:
    """Elements asked about, whether by name ("symbol for iron") or by symbol ("symbol Fe")."""
    by_symbol = {symbol: name for name, symbol, _ in S._ELEMENTS}
    found = set()
    for item in items:
        if match := re.search(r"chemical symbol for (\w+)\?$", item.question):
            found.add(match.group(1))
        elif match := re.search(r"has the chemical symbol (\w+)\?$", item.question):
            found.add(by_symbol[match.group(1)])
    return found


def test_splits_are_disjoint_by_fact_not_by_wording():
    """Checked on the question text itself, independently of the fact keys: a country's capital
    or an element's symbol never shows up in two splits, whatever wording or direction."""
    items = {split: S.generate_mmlu_items(split, 300, seed=5) for split in S.SAMPLE_SPLITS}
    countries = {split: _capital_countries(found) for split, found in items.items()}
    elements = {split: _elements(found) for split, found in items.items()}
    assert all(len(found) >= 5 for found in [*countries.values(), *elements.values()])
    for first, second in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not countries[first] & countries[second]
        assert not elements[first] & elements[second]


def test_row_ids_are_disjoint_across_splits(mmlu_raw, mathqa_raw):
    for task, frames in (("mmlu", mmlu_raw), ("mathqa", mathqa_raw)):
        ids = {
            split: set(normalize(task, frame, source=task, split=split, origin="s")[0]["row_id"])
            for split, frame in frames.items()
        }
        assert len(ids["train"]) == SIZES["train"]
        assert not ids["train"] & ids["validation"]
        assert not ids["train"] & ids["test"]
        assert not ids["validation"] & ids["test"]


def test_correct_letters_are_balanced(mmlu_raw, mathqa_raw):
    train_letters = Counter(struct["answer"] for struct in mmlu_raw["train"]["train"])
    assert sorted(train_letters) == [0, 1, 2, 3]
    assert max(train_letters.values()) - min(train_letters.values()) <= 1
    test_letters = Counter(mmlu_raw["test"]["answer"])
    assert max(test_letters.values()) - min(test_letters.values()) <= 1
    for frame in mathqa_raw.values():
        letters = Counter(frame["correct"])
        assert sorted(letters) == list("abcde")
        assert max(letters.values()) - min(letters.values()) <= 1


def test_distractors_come_from_the_same_pool(mmlu_raw):
    """A capital question offers only capitals, so the answer is not given away by type."""
    capitals = {capital for _, capital, _ in S._CAPITALS}
    frame = mmlu_raw["validation"]
    capital_rows = frame[frame["question"].str.contains("capital of")]
    assert len(capital_rows) > 5
    for choices in capital_rows["choices"]:
        assert set(choices) <= capitals
        assert len(set(choices)) == 4


def test_unknown_split_and_negative_size_are_refused():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        S.generate_mmlu_raw("dev", 5, seed=0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        S.generate_mathqa_raw("train", -1, seed=0)
    assert S.generate_mathqa_raw("test", 0, seed=0).empty
