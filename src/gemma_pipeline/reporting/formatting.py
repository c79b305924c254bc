"""How the report writes numbers: shares in percent, the rest to 3 significant digits."""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not NaN): a number the report can show."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def format_number(value: Any, *, percent: bool, signed: bool = False) -> str:
    """A share in percent with one decimal, anything else to 3 significant digits."""
    if not is_number(value):
        return MISSING
    sign = "+" if signed else ""
    if percent:
        return f"{value * 100:{sign}.1f}"
    return f"{float(f'{value:.3g}'):{sign}.{_decimals(value)}f}"


def _decimals(value: float) -> int:
    # Decimals that 3 significant digits leave: 12.345 -> 1, 0.0123 -> 4, 1234.5 -> 0.
    if value == 0:
        return 0
    return max(0, 2 - math.floor(math.log10(abs(float(f"{value:.3g}")))))


def format_estimate(value: Any, se: Any, *, percent: bool, signed: bool = False) -> str:
    """``"25.0 ± 4.4"``; the bare value where there is no SE; ``"—"`` where no value.

    The SE gets as many decimals as the value, so both read at the same precision.
    """
    text = format_number(value, percent=percent, signed=signed)
    if text == MISSING or not is_number(se):
        return text
    if percent:
        return f"{text} ± {se * 100:.1f}"
    return f"{text} ± {se:.{_decimals(value) if value else _decimals(se)}f}"


def is_significant(change: Any, change_se: Any, significance_se: float = 2.0) -> bool:
    """Whether ``|change| > significance_se · SE`` (never without both numbers)."""
    if not (is_number(change) and is_number(change_se)):
        return False
    return abs(change) > significance_se * change_se
