"""What a study file's fields accept: the model factory's rules, and the ones only hpo needs.

The rule types live in ``models.fields`` (``models`` is the lowest layer and imports nothing of
hpo; ``ModelConfig`` declares its fields with them) and are re-exported here. ``Pack`` and
``Resources`` describe how a study runs, which the model factory never sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.fields import (
    Finetune,
    Flag,
    Invalid,
    ListOf,
    Number,
    OneOf,
    Rule,
    Text,
    field_rule,
    number_text_hint,
    rule,
    searchable,
)

__all__ = [
    "Finetune",
    "Flag",
    "Invalid",
    "ListOf",
    "Number",
    "OneOf",
    "Pack",
    "Resources",
    "Rule",
    "Text",
    "field_rule",
    "is_number",
    "rule",
    "searchable",
]


@dataclass(frozen=True)
class Pack(Rule):
    """``search.pack``: members per Ray trial."""

    allowed: str = "auto | a whole number >= 1"

    def parse(self, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 1):
            return value
        hint = number_text_hint(value, integer=True)
        raise Invalid(f"wrong type: {hint}" if hint else "unknown value", self.allowed)


@dataclass(frozen=True)
class Resources(Rule):
    """``search.resources_per_trial``: what Ray reserves for one trial."""

    allowed: str = "{cpu: number > 0, gpu: number >= 0} (fractions allowed)"

    def parse(self, value: Any) -> Any:
        if not isinstance(value, dict) or set(value) - {"cpu", "gpu"}:
            raise Invalid("wrong type", self.allowed)
        cpu, gpu = value.get("cpu", 1), value.get("gpu", 0)
        for text in (cpu, gpu):
            if hint := number_text_hint(text):
                raise Invalid(f"wrong type: {hint}", self.allowed)
        if not (is_number(cpu) and cpu > 0 and is_number(gpu) and gpu >= 0):
            raise Invalid("out of range", self.allowed)
        return {"cpu": float(cpu), "gpu": float(gpu)}


def is_number(x: Any) -> bool:
    """An int or float, not a bool (YAML's true/false)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)
