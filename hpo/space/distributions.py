"""Search-space values: fixed values and the five distributions of the study file.

Pure: imports neither torch, Ray, Optuna nor MLflow. Each distribution checks itself when made
and can map a value to and from "t-space" (``log10(x)`` for log ranges, ``x`` otherwise), the
space in which coarse-to-fine refinement works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from models.fields import number_text_hint

__all__ = [
    "Categorical",
    "Distribution",
    "DIST_KEYS",
    "Float",
    "Int",
    "Numeric",
    "is_distribution_form",
    "parse_distribution",
]


class Distribution:
    """A search distribution; subclasses are frozen value objects."""

    yaml_key: ClassVar[str]

    def to_yaml(self) -> dict[str, list[Any]]:
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Numeric(Distribution):
    """A real or integer range with inclusive bounds ``low <= x <= high``."""

    low: float
    high: float
    log: bool = False

    integer: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                hint = number_text_hint(value, integer=self.integer)
                raise ValueError(f"`{name}` must be a number, but got {value!r}"
                                 f"{': ' + hint if hint else ''}.")
            if not math.isfinite(value):
                raise ValueError(f"`{name}` must be finite, but got {value!r}.")
            if self.integer and int(value) != value:
                raise ValueError(f"`{name}` must be a whole number, but got {value!r}.")
        if not self.low < self.high:
            raise ValueError(f"`low < high` must hold, but got (low={self.low}, high={self.high}).")
        if self.log and self.low <= 0:
            raise ValueError(
                f"a log range needs `0 < low`, but got (low={self.low}, high={self.high})."
            )

    @property
    def yaml_key(self) -> str:  # type: ignore[override]
        if self.integer:
            return "logint" if self.log else "int"
        return "loguniform" if self.log else "uniform"

    def to_yaml(self) -> dict[str, list[Any]]:
        cast = int if self.integer else float
        return {self.yaml_key: [cast(self.low), cast(self.high)]}

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def to_t(self, x: float) -> float:
        return math.log10(x) if self.log else float(x)

    def from_t(self, t: float) -> float:
        return 10.0**t if self.log else float(t)

    @property
    def t_low(self) -> float:
        return self.to_t(self.low)

    @property
    def t_high(self) -> float:
        return self.to_t(self.high)

    def with_bounds(self, low: float, high: float) -> Numeric:
        """The same kind of range over new bounds (rounded outward for integers)."""
        if self.integer:
            low, high = math.floor(low + 1e-9), math.ceil(high - 1e-9)
            if low == high:
                high = low + 1
        return type(self)(low=low, high=high, log=self.log)


@dataclass(frozen=True)
class Float(Numeric):
    """``{uniform: [lo, hi]}`` or ``{loguniform: [lo, hi]}``."""


@dataclass(frozen=True)
class Int(Numeric):
    """``{int: [lo, hi]}`` or ``{logint: [lo, hi]}``, inclusive."""

    integer: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))

    def contains(self, value: Any) -> bool:
        return super().contains(value) and int(value) == value


@dataclass(frozen=True)
class Categorical(Distribution):
    """``{choice: [a, b, c]}``: at least one choice, no duplicates."""

    choices: tuple[Any, ...]

    yaml_key: ClassVar[str] = "choice"

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(_freeze(c) for c in self.choices))
        if not self.choices:
            raise ValueError("`choice` needs at least one value, but got an empty list.")
        seen: list[Any] = []
        for c in self.choices:
            if any(c == s and type(c) is type(s) for s in seen):
                raise ValueError(f"`choice` values must be distinct, but {c!r} repeats.")
            seen.append(c)

    def to_yaml(self) -> dict[str, list[Any]]:
        return {"choice": [_thaw(c) for c in self.choices]}

    def contains(self, value: Any) -> bool:
        return _freeze(value) in self.choices


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list | tuple) else value


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


DIST_KEYS: dict[str, type[Distribution]] = {
    "choice": Categorical,
    "uniform": Float,
    "loguniform": Float,
    "int": Int,
    "logint": Int,
}

AnyDistribution = Union[Float, Int, Categorical]


def is_distribution_form(raw: Any) -> bool:
    """A one-key mapping whose key names a distribution (``{loguniform: [...]}``)."""
    return isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in DIST_KEYS


def parse_distribution(raw: dict[str, Any]) -> AnyDistribution:
    """Build a distribution from its YAML form; raises ValueError stating the rule broken."""
    (key, args), = raw.items()
    if not isinstance(args, list):
        raise ValueError(f"`{key}` takes a list, but got {args!r}.")
    if key == "choice":
        return Categorical(tuple(args))
    if len(args) != 2:
        raise ValueError(f"`{key}` takes [lo, hi], but got {len(args)} value(s).")
    log = key.startswith("log")
    if key in ("int", "logint"):
        return Int(low=args[0], high=args[1], log=log)
    return Float(low=args[0], high=args[1], log=log)
