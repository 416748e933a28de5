"""What a config field accepts: a rule per field, carried in the dataclass field's metadata.

``ModelConfig`` declares each field as ``name: type = rule(Rule, default)``, so the default, the
rule and its comment are written once; the model validator (``models.validate``) and the study
file's parser (``hpo.config``) both walk those fields. Torch-free and hpo-free: ``models`` is the
lowest layer, and ``hpo`` imports these rules from here.

A rule has two entry points:

- ``parse(raw)``: a value as YAML gives it (lists, ints for floats, ...) -> the typed value, or
  ``Invalid``. The study-file parser uses it.
- ``check(value)``: a value already in the config's type (a tuple for a list, an int for a whole
  number) -> ``None``, or ``Invalid``. The model validator uses it on a built ``ModelConfig``.
  It does not consult the file system: whoever opens a path reports a missing file, naming it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.registry import Registry

__all__ = [
    "FINETUNE_MODES",
    "Finetune",
    "Flag",
    "Invalid",
    "ListOf",
    "Number",
    "OneOf",
    "Rule",
    "Text",
    "field_rule",
    "number_text_hint",
    "rule",
    "searchable",
]

FINETUNE_MODES = ("all", "classifier")  # or a positive int: train only the last N layers


class Invalid(ValueError):
    """A value broke its rule; ``allowed`` says what the rule accepts."""

    def __init__(self, message: str, allowed: str | None = None) -> None:
        super().__init__(message)
        self.allowed = allowed


class Rule:
    """What one field accepts. ``parse`` returns the typed value or raises Invalid."""

    allowed: str = ""

    def parse(self, value: Any) -> Any:
        raise NotImplementedError

    def check(self, value: Any) -> None:
        """Raise Invalid unless ``value``, already in the config's type, follows the rule."""
        self.parse(value)


@dataclass(frozen=True)
class Number(Rule):
    """A real or whole number within limits; ``*_open`` makes a limit exclusive."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False

    @property
    def allowed(self) -> str:  # type: ignore[override]
        kind = "a whole number" if self.integer else "a number"
        lo, hi = self.low, self.high
        if lo == -math.inf and hi == math.inf:
            text = kind
        elif hi == math.inf:
            text = f"{kind} {'>' if self.low_open else '>='} {_num(lo)}"
        elif lo == -math.inf:
            text = f"{kind} {'<' if self.high_open else '<='} {_num(hi)}"
        else:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            text = f"{kind} in {left}{_num(lo)}, {_num(hi)}{right}"
        return text + (" or null" if self.optional else "")

    def parse(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = number_text_hint(value, integer=self.integer)
            raise Invalid(f"wrong type: {hint}" if hint else "wrong type", self.allowed)
        if self.integer and int(value) != value:
            raise Invalid("not a whole number", self.allowed)
        if not self.contains(value):
            raise Invalid("out of range", self.allowed)
        return int(value) if self.integer else float(value)

    def check(self, value: Any) -> None:
        # YAML's 2.0 parses to 2; a config holding the float 2.0 would reach torch as a float.
        if self.integer and isinstance(value, float):
            raise Invalid("not a whole number", self.allowed)
        self.parse(value)

    def contains(self, x: float) -> bool:
        if math.isnan(x):
            return False
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def limits(self) -> tuple[float, float]:
        """Closed limits for refinement: open ends pulled in by a hair."""
        lo = self.low + (1e-12 if self.low_open and self.low == 0 else 0.0)
        hi = self.high - (1e-3 if self.high_open and math.isfinite(self.high) else 0.0)
        return lo, hi


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


# sign, whole part, fraction, exponent sign, exponent: "1e-4", "-.5", "2.5E3"
_NUMBER_TEXT = re.compile(r"([-+]?)(\d*)(?:\.(\d*))?(?:[eE]([-+]?)(\d+))?")


def number_text_hint(value: Any, *, integer: bool = False) -> str:
    """How to write ``value``, a string that reads as a finite number, so that YAML reads a
    number: ``"write 1.0e-4 (YAML reads 1e-4 as text)"``; ``""`` for anything else.

    YAML 1.1 (PyYAML) reads a float only with a dot in the mantissa and a sign on the exponent,
    so ``1e-4`` and ``1.0e4`` are strings; so is any quoted number.
    """
    if not isinstance(value, str):
        return ""
    try:
        x = float(value)
    except ValueError:
        return ""
    if not math.isfinite(x):
        return ""
    if integer and x.is_integer():
        fix = str(int(x))
    else:
        # the user's digits where they fit the pattern, else Python's (1_000 -> 1000.0)
        m = _NUMBER_TEXT.fullmatch(value.strip())
        if m is None or not (m[2] or m[3]):
            m = _NUMBER_TEXT.fullmatch(repr(x))
        if m is None:  # repr of a finite float always fits; nothing to suggest otherwise
            return ""
        sign, whole, frac, exp_sign, exp = m.groups()
        fix = f"{sign}{whole or '0'}.{frac or '0'}"
        if exp is not None:
            fix += f"e{exp_sign or '+'}{exp}"
    import yaml  # only on this error path; the model factory does not otherwise need it

    text = value.strip()
    try:
        unquoted_is_text = isinstance(yaml.safe_load(text), str)
    except yaml.YAMLError:
        unquoted_is_text = True
    if unquoted_is_text:
        return f"write {fix} (YAML reads {text} as text)"
    return f"write {fix} without quotes (a quoted number is text)"


@dataclass(frozen=True)
class OneOf(Rule):
    """A name from a fixed list or a registry."""

    names: tuple[str, ...] | Registry
    optional: bool = False

    def _known(self) -> list[str]:
        return self.names.names() if isinstance(self.names, Registry) else list(self.names)

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return " | ".join(self._known()) + (" | null" if self.optional else "")

    def parse(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or value not in self._known():
            raise Invalid("unknown value" if isinstance(value, str) else "wrong type", self.allowed)
        return value


@dataclass(frozen=True)
class Flag(Rule):
    allowed: str = "true | false"

    def parse(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise Invalid("wrong type", self.allowed)
        return value


@dataclass(frozen=True)
class Text(Rule):
    """A string; ``path`` ones must name an existing file or folder (checked by ``parse``)."""

    optional: bool = True
    path: bool = False

    @property
    def allowed(self) -> str:  # type: ignore[override]
        what = "an existing path" if self.path else "a string"
        return what + (" or null" if self.optional else "")

    def parse(self, value: Any) -> Any:
        self.check(value)
        if value is not None and self.path and not os.path.exists(value):
            raise Invalid("no such file or folder", self.allowed)
        return value

    def check(self, value: Any) -> None:
        if value is None and self.optional:
            return
        if not isinstance(value, str) or not value:
            raise Invalid("wrong type", self.allowed)


@dataclass(frozen=True)
class ListOf(Rule):
    """A non-empty (unless ``empty``) list whose items follow ``item``; typed, a tuple."""

    item: Rule
    empty: bool = False

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return f"a {'' if self.empty else 'non-empty '}list of ({self.item.allowed})"

    def parse(self, value: Any) -> Any:
        if not isinstance(value, list) or (not value and not self.empty):
            raise Invalid("wrong type", self.allowed)
        return tuple(self._item(i, v, self.item.parse) for i, v in enumerate(value))

    def check(self, value: Any) -> None:
        if not isinstance(value, (tuple, list)) or (not value and not self.empty):
            raise Invalid("wrong type", self.allowed)
        for i, v in enumerate(value):
            self._item(i, v, self.item.check)

    def _item(self, index: int, value: Any, apply: Any) -> Any:
        """``apply(value)``; a broken item is named by its index and its own reason (which says
        how to write ``1e2`` so that YAML reads a number)."""
        try:
            return apply(value)
        except Invalid as bad:
            raise Invalid(f"bad item [{index}]: {bad}", self.allowed) from None


@dataclass(frozen=True)
class Finetune(Rule):
    allowed: str = "all | classifier | a whole number >= 1 (train only that many final layers)"

    def parse(self, value: Any) -> Any:
        if value in FINETUNE_MODES:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise Invalid("unknown value", self.allowed)


def rule(
    r: Rule,
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    searchable: bool = True,
) -> Any:
    """A dataclass field that carries its rule.

    ``searchable=False`` marks a field of a searchable section (model, train) that a study may
    only fix, never search (a path, a mode of operation).
    """
    metadata = {"rule": r, "searchable": searchable}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_rule(f: dataclasses.Field[Any]) -> Rule:
    """The rule a dataclass field was declared with; TypeError names a field without one."""
    if "rule" not in f.metadata:
        raise TypeError(f"field {f.name!r} has no rule: declare it as `{f.name}: T = rule(...)`")
    r: Rule = f.metadata["rule"]
    return r


def searchable(f: dataclasses.Field[Any]) -> bool:
    """Whether a study may search this field (see ``rule``)."""
    return bool(f.metadata.get("searchable", True))
