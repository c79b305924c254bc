"""Errors raised by the source normalizers before any row is looked at."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class SourceLayoutError(ValueError):
    """A raw frame whose columns match none of the layouts a normalizer knows.

    Raised up front rather than rejecting every row, because a wrong file or a renamed
    column upstream is a configuration mistake, not a data-quality problem.
    """

    def __init__(
        self,
        *,
        task: str,
        origin: str,
        found: Sequence[object],
        expected: Mapping[str, str],
    ) -> None:
        self.task = task
        self.origin = origin
        self.found = [str(column) for column in found]
        self.expected = dict(expected)
        lines = [
            f"cannot read {task} source {origin!r}: its columns match no known layout.",
            f"  found columns: {self.found}",
            "  expected one of:",
            *(f"    - {name}: {columns}" for name, columns in self.expected.items()),
        ]
        super().__init__("\n".join(lines))
