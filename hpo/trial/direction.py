"""Which way a metric improves: one enum instead of ``"max" if ... else`` at every use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, TypeVar

__all__ = ["Direction"]

T = TypeVar("T")


class Direction(StrEnum):
    """``max``: higher is better (accuracy); ``min``: lower is better (loss, gap).

    A StrEnum, so it compares equal to the study file's ``"max"``/``"min"`` and prints as them.
    """

    MAX = "max"
    MIN = "min"

    @classmethod
    def of(cls, mode: Any) -> Direction:
        """``mode`` as a Direction; anything else raises, naming what is allowed."""
        try:
            return cls(mode)
        except ValueError:
            raise ValueError(f"`mode` must be one of max, min, but got {mode!r}.") from None

    @property
    def sign(self) -> float:
        """+1 for max, -1 for min: ``sign * value`` is larger for the better value."""
        return 1.0 if self is Direction.MAX else -1.0

    @property
    def optuna(self) -> str:
        """Optuna's name for it (``create_study(direction=...)``)."""
        return "maximize" if self is Direction.MAX else "minimize"

    def best(self, values: Iterable[T], key: Callable[[T], Any] | None = None) -> T:
        """The best of ``values`` (by ``key``): ``max`` or ``min``."""
        pick = max if self is Direction.MAX else min
        return pick(values, key=key) if key is not None else pick(values)

    def ranked(self, values: Iterable[T], key: Callable[[T], Any]) -> list[T]:
        """``values`` sorted best first (stable for ties)."""
        return sorted(values, key=key, reverse=self is Direction.MAX)
