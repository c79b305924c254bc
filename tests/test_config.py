import pytest

from gemma_pipeline.config import IngestParams, ParameterError, TokenizeParams, parse_params


def test_unknown_key_is_rejected_with_its_full_name():
    with pytest.raises(ParameterError, match=r"tokenize\.max_lenght"):
        parse_params(TokenizeParams, {"max_length": 512, "max_lenght": 1}, "tokenize")


def test_bad_value_names_the_nested_key():
    raw = {"sources": {"mmlu": {"task": "mmlu", "loader": "ftp", "sample": {"train": 3}}}}
    with pytest.raises(ParameterError, match=r"ingest\.sources\.mmlu\.loader"):
        parse_params(IngestParams, raw, "ingest")


def test_loader_needs_its_section():
    raw = {"sources": {"mmlu": {"task": "mmlu", "loader": "local"}}}
    with pytest.raises(ParameterError, match="needs a 'local:' section"):
        parse_params(IngestParams, raw, "ingest")


def test_valid_sample_source_parses():
    raw = {"sources": {"m": {"task": "mathqa", "loader": "sample", "sample": {"test": 5}}}}
    params = parse_params(IngestParams, raw, "ingest")
    assert params.sources["m"].sample == {"test": 5}
