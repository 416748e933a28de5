"""The options of the factory's public parts (``models.activation``, ``models.initialize``).

A part takes a few ``ModelConfig`` fields as keywords; they are checked here by the fields' own
rules (``models.fields``), so a default and its limits stay written once, in ``models.config``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from models.config import ModelConfig
from models.errors import ModelError, Problem
from models.fields import Invalid, OneOf, field_rule
from models.registry import Registry

__all__ = ["part_config"]

_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}


def part_config(caller: str, **options: Any) -> ModelConfig:
    """A ``ModelConfig`` of ``options`` (``None``: the field's default), every other field at
    its default.

    A registry name (activation, init) is checked first and raises ``UnknownNameError`` with the
    known names; every other broken rule is collected into one ``ModelError`` that starts with
    ``caller`` and names each option, its value and what it allows.
    """
    given = {key: value for key, value in options.items() if value is not None}
    problems = []
    for key, value in given.items():
        rule = field_rule(_FIELDS[key])
        if isinstance(rule, OneOf) and isinstance(rule.names, Registry):
            rule.names.check(value)
        try:
            rule.check(value)
        except Invalid as exc:
            problems.append(Problem(key, str(exc), value, exc.allowed))
    if problems:
        raise ModelError(f"{caller}: " + "; ".join(p.render() for p in problems))
    return ModelConfig(**given)
