"""Check a ModelConfig before anything is built; torch-free, so the study validator can use it.

``config_problems`` collects every problem at once (unknown names included, with the known
names as ``allowed``); ``check_config`` is what ``build_model`` runs: an unknown name raises
``UnknownNameError`` (the registries' error), any other problem raises one ``SpecError`` listing
them all.
"""

from __future__ import annotations

import math
from typing import Any

from hpo.errors import Problem, SpecError
from models.config import ModelConfig
from models.registry import ACTIVATIONS, ARCHITECTURES, INITIALIZERS, Registry

__all__ = ["FINETUNE_MODES", "check_config", "config_problems"]

FINETUNE_MODES = ("all", "classifier")  # or a positive int: train only the last N layers


def _name_problems(config: ModelConfig, prefix: str) -> list[Problem]:
    named: list[tuple[str, Registry, Any]] = [
        ("arch", ARCHITECTURES, config.arch),
        ("activation", ACTIVATIONS, config.activation),
        ("init", INITIALIZERS, config.init),
    ]
    return [
        Problem(f"{prefix}.{field}", f"unknown {registry.kind}", value, ", ".join(registry.names()))
        for field, registry, value in named
        if value not in registry
    ]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _value_problems(config: ModelConfig, prefix: str) -> list[Problem]:
    problems: list[Problem] = []

    def bad(field: str, message: str, allowed: str) -> None:
        problems.append(Problem(f"{prefix}.{field}", message, getattr(config, field), allowed))

    hidden = config.hidden
    if not isinstance(hidden, (tuple, list)) or not all(_is_int(w) and w >= 1 for w in hidden):
        bad("hidden", "must be a list of layer widths", "integers >= 1")
    elif config.arch == "convnet" and len(hidden) == 0:
        bad("hidden", "a convnet needs at least one block", "one or more channel counts")
    if not (_is_real(config.leaky_slope) and 0 <= config.leaky_slope < 1):
        bad("leaky_slope", "out of range", "0 <= leaky_slope < 1")
    if not (_is_real(config.elu_alpha) and config.elu_alpha > 0):
        bad("elu_alpha", "out of range", "elu_alpha > 0")
    if not (_is_int(config.maxout_k) and config.maxout_k >= 2):
        bad("maxout_k", "maxout needs at least two linear pieces", "integer >= 2")
    if not (_is_real(config.init_std) and config.init_std > 0):
        bad("init_std", "out of range", "init_std > 0")
    if not _is_real(config.init_constant):
        bad("init_constant", "must be a finite number", "a finite number")
    if not isinstance(config.batchnorm, bool):
        bad("batchnorm", "must be true or false", "true, false")
    if not (_is_real(config.dropout) and 0 <= config.dropout < 1):
        bad("dropout", "out of range (the probability of dropping a unit)", "0 <= dropout < 1")
    if config.checkpoint is not None and not (
        isinstance(config.checkpoint, str) and config.checkpoint
    ):
        bad("checkpoint", "must be a file path", "a path to a saved model, or null")
    finetune = config.finetune
    if not (
        finetune in FINETUNE_MODES
        or (isinstance(finetune, int) and not isinstance(finetune, bool) and finetune >= 1)
    ):
        bad("finetune", "unknown finetune mode", "all, classifier, or an integer N >= 1")
    elif finetune != "all" and config.checkpoint is None:
        bad(
            "finetune",
            "freezing layers needs a checkpoint to start from (set model.checkpoint)",
            "all, when there is no checkpoint",
        )
    return problems


def config_problems(config: ModelConfig, *, prefix: str = "model") -> list[Problem]:
    """Every problem with ``config``, located as ``{prefix}.{field}``; empty when it is valid."""
    return _name_problems(config, prefix) + _value_problems(config, prefix)


def check_config(config: ModelConfig, *, prefix: str = "model") -> None:
    """Raise on an invalid config: UnknownNameError for a name, else one SpecError for all."""
    ARCHITECTURES.check(config.arch)
    ACTIVATIONS.check(config.activation)
    INITIALIZERS.check(config.init)
    problems = _value_problems(config, prefix)
    if problems:
        raise SpecError(problems)
