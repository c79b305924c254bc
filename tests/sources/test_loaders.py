import json
import sys
import types

import pandas as pd
import pytest

from gemma_pipeline.sources import load_hub, load_local, normalize

ROWS = [
    {"question": "Capital of France?", "subject": "geo", "choices": ["Paris", "Rome"], "answer": 0},
    {"question": "2 + 2?", "subject": "", "choices": ["3", "4", "None"], "answer": "B"},
]


def check_normalizes(raw: pd.DataFrame) -> pd.DataFrame:
    accepted, rejected = normalize("mmlu", raw, source="mmlu", split="test", origin="file")
    assert rejected.empty, rejected["reason"].tolist()
    assert accepted["choices"].tolist() == [row["choices"] for row in ROWS]
    assert accepted["answer"].tolist() == [0, 1]
    assert accepted["subject"].tolist() == ["geo", ""]
    return accepted


def test_jsonl(tmp_path):
    path = tmp_path / "mmlu.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in ROWS) + "\n\n", encoding="utf-8")
    raw = load_local(path)
    assert list(raw.columns) == ["question", "subject", "choices", "answer"]
    check_normalizes(raw)


def test_jsonl_reports_the_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl' line 2: invalid JSON"):
        load_local(path)


@pytest.mark.parametrize(
    "content",
    [
        ROWS,
        {"data": ROWS},
        {"rows": [{"row_idx": index, "row": row} for index, row in enumerate(ROWS)]},
        {column: [row[column] for row in ROWS] for column in ROWS[0]},
    ],
    ids=["records", "data-field", "datasets-server-rows", "columns"],
)
def test_json_shapes(tmp_path, content):
    path = tmp_path / "mmlu.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    check_normalizes(load_local(path))


def test_json_holding_json_lines_as_datasets_to_json_writes_it(tmp_path):
    path = tmp_path / "mmlu.json"
    path.write_text("\n".join(json.dumps(row) for row in ROWS), encoding="utf-8")
    check_normalizes(load_local(path))


def test_json_of_an_unknown_shape_is_refused(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"version": 1, "question": "x"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"odd\.json"):
        load_local(path)


def test_csv_list_columns_arrive_as_text_and_still_normalize(tmp_path):
    path = tmp_path / "mmlu.csv"
    pd.DataFrame(ROWS).to_csv(path, index=False)
    raw = load_local(path)
    assert raw["choices"].tolist() == [str(row["choices"]) for row in ROWS]
    accepted = check_normalizes(raw)
    # "None" stays an option text instead of turning into a missing value.
    by_question = accepted.set_index("question")["choices"]
    assert by_question["2 + 2?"] == ["3", "4", "None"]


def test_parquet(tmp_path):
    path = tmp_path / "mmlu.parquet"
    pd.DataFrame(ROWS).astype({"answer": str}).to_parquet(path)
    check_normalizes(load_local(path))


def test_upper_case_extension(tmp_path):
    path = tmp_path / "MMLU.JSONL"
    path.write_text("\n".join(json.dumps(row) for row in ROWS), encoding="utf-8")
    assert len(load_local(str(path))) == 2


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "mmlu.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nowhere/mmlu\.jsonl"):
        load_local(path)


def test_unknown_extension_names_path_and_allowed_ones(tmp_path):
    path = tmp_path / "mmlu.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_local(path)
    message = str(info.value)
    assert "mmlu.txt" in message and "'.txt'" in message
    for extension in (".jsonl", ".json", ".csv", ".parquet"):
        assert extension in message


class FakeDataset:
    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def to_pandas(self) -> pd.DataFrame:
        return self.frame


@pytest.fixture
def fake_datasets(monkeypatch):
    """Stand-in ``datasets`` module: no network, and no multi-second import of the real one."""
    module = types.ModuleType("datasets")
    monkeypatch.setitem(sys.modules, "datasets", module)
    return module


def test_load_hub_passes_arguments_and_returns_the_frame(fake_datasets):
    calls = []

    def load_dataset(path, name=None, *, split, revision=None, token=None):
        calls.append((path, name, split, revision, token))
        return FakeDataset(pd.DataFrame(ROWS))

    fake_datasets.load_dataset = load_dataset
    raw = load_hub("cais/mmlu", "all", "test", revision="abc123", token="hf_x")
    assert calls == [("cais/mmlu", "all", "test", "abc123", "hf_x")]
    check_normalizes(raw)


def test_load_hub_failure_suggests_the_demo_environment(fake_datasets):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Temporary failure in name resolution")

    fake_datasets.load_dataset = load_dataset
    with pytest.raises(RuntimeError) as info:
        load_hub("allenai/math_qa", None, "train")
    message = str(info.value)
    assert "could not reach or read the Hugging Face Hub" in message
    assert "'allenai/math_qa'" in message and "split 'train'" in message
    assert "name resolution" in message
    assert "kedro run --env demo" in message
    assert isinstance(info.value.__cause__, ConnectionError)
