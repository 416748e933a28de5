"""Check a ModelConfig before anything is built; torch-free, so the study validator can use it.

Each field is checked by the rule it is declared with (``models.config``), then the rules
between fields (``relation_problems``, which the study-file parser applies to a study's model
section as well). ``config_problems`` collects every problem at once (unknown names included,
with the known names as ``allowed``); ``check_config`` is what ``build_model`` runs: an unknown
name raises ``UnknownNameError`` (the registries' error), any other problem raises one
``ConfigError`` listing them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from models.config import ModelConfig
from models.errors import ConfigError, Problem
from models.fields import FINETUNE_MODES, Invalid, OneOf, field_rule
from models.registry import Registry

__all__ = ["FINETUNE_MODES", "check_config", "config_problems", "relation_problems"]


def _field_problems(config: ModelConfig, prefix: str) -> list[Problem]:
    problems = []
    for f in dataclasses.fields(ModelConfig):
        value = getattr(config, f.name)
        try:
            field_rule(f).check(value)
        except Invalid as exc:
            problems.append(Problem(f"{prefix}.{f.name}", str(exc), value, exc.allowed))
    return problems


def relation_problems(model: Mapping[str, Any], *, prefix: str = "model") -> list[Problem]:
    """The rules between fields, for values that each follow their own rule.

    ``model`` maps field names to values: a ModelConfig's, or a study's model section, where a
    searched field holds a distribution (the fields read here are never searched).
    """
    problems = []
    finetune = model.get("finetune", "all")  # a builder's model section may leave both out
    if finetune != "all" and model.get("checkpoint") is None:
        problems.append(Problem(f"{prefix}.finetune", "finetuning needs model.checkpoint",
                                finetune, "all, or set model.checkpoint"))
    return problems


def config_problems(config: ModelConfig, *, prefix: str = "model") -> list[Problem]:
    """Every problem with ``config``, located as ``{prefix}.{field}``; empty when it is valid."""
    problems = _field_problems(config, prefix)
    if problems:  # a relation between fields means little while a field breaks its own rule
        return problems
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(ModelConfig)}
    return relation_problems(values, prefix=prefix)


def check_config(config: ModelConfig, *, prefix: str = "model") -> None:
    """Raise on an invalid config: UnknownNameError for a name, else one ConfigError for all."""
    for f in dataclasses.fields(ModelConfig):
        r = field_rule(f)
        if isinstance(r, OneOf) and isinstance(r.names, Registry):
            r.names.check(getattr(config, f.name))
    problems = config_problems(config, prefix=prefix)
    if problems:
        raise ConfigError(problems)
