"""How the report writes numbers."""

from __future__ import annotations

import pytest

from gemma_pipeline.reporting.formatting import format_estimate, is_significant


@pytest.mark.parametrize(
    ("value", "se", "percent", "signed", "expected"),
    [
        (0.25, 0.04352, True, False, "25.0 ± 4.4"),
        (0.25, 0.06, True, True, "+25.0 ± 6.0"),
        (-0.021, 0.01, True, True, "-2.1 ± 1.0"),
        (0.5, None, True, False, "50.0"),
        (None, 0.01, True, False, "—"),
        (12.345, 0.5123, False, False, "12.3 ± 0.5"),
        (1234.5, 20.0, False, True, "+1230 ± 20"),
        (0.0123, None, False, False, "0.0123"),
    ],
)
def test_format_estimate(value, se, percent, signed, expected):
    assert format_estimate(value, se, percent=percent, signed=signed) == expected


@pytest.mark.parametrize(
    ("change", "se", "expected"),
    [
        (0.25, 0.06, True),
        (-0.25, 0.06, True),
        (0.12, 0.06, False),
        (0.1, None, False),
        (None, 0.1, False),
        (0.0, 0.0, False),
    ],
)
def test_a_change_is_marked_only_beyond_two_standard_errors(change, se, expected):
    assert is_significant(change, se, 2.0) is expected
