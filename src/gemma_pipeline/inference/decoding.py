"""How the next tokens are chosen: greedy unless a temperature is asked for."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserInputError


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy (argmax), the same answer every time
    top_p: float = 1.0  # nucleus sampling; only with a temperature above 0
    seed: int | None = None  # sampling only: the same seed, the same sample

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UserInputError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UserInputError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserInputError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
