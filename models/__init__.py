"""The model factory: every activation, initializer and architecture the lecture teaches.

Importing ``models`` does not import torch: the study-file validator reads ``models.registry``,
``models.config`` (each field with its rule, ``models.fields``) and ``models.validate`` and must
stay fast. The torch-backed names below are imported on first access (PEP 562 module
``__getattr__``). ``models`` is the lowest layer: it imports nothing of ``hpo``, and its errors
(``models.errors``) are its own.

The factory's parts are public, for a network of the user's own (a study's ``model.builder``):
``activation(name, ...)`` (an ``ActivationModule``, which the instruments find),
``initialize(module, scheme, activation=...)`` and ``batchnorm(features, kind=...)``; the
factory's mlp and convnet are built from the same functions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from models.config import ModelConfig
from models.errors import ConfigError, ModelError, Problem, UnknownNameError
from models.registry import ACTIVATIONS, ARCHITECTURES, BATCHNORMS, INITIALIZERS, Registry
from models.validate import check_config, config_problems

if TYPE_CHECKING:
    from models._network import Block, Network
    from models.activations import ActivationModule, activation
    from models.factory import build_model
    from models.finetune import CheckpointMeta, apply_finetune, load_checkpoint, save_checkpoint
    from models.init import initialize
    from models.normalization import batchnorm, recompute_batchnorm_stats

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "BATCHNORMS",
    "INITIALIZERS",
    "ActivationModule",
    "Block",
    "CheckpointMeta",
    "ConfigError",
    "ModelConfig",
    "ModelError",
    "Network",
    "Problem",
    "Registry",
    "UnknownNameError",
    "activation",
    "apply_finetune",
    "batchnorm",
    "build_model",
    "check_config",
    "config_problems",
    "initialize",
    "load_checkpoint",
    "recompute_batchnorm_stats",
    "save_checkpoint",
]

_LAZY = {
    "ActivationModule": "models.activations",
    "Block": "models._network",
    "Network": "models._network",
    "activation": "models.activations",
    "batchnorm": "models.normalization",
    "build_model": "models.factory",
    "initialize": "models.init",
    "recompute_batchnorm_stats": "models.normalization",
    "CheckpointMeta": "models.finetune",
    "apply_finetune": "models.finetune",
    "load_checkpoint": "models.finetune",
    "save_checkpoint": "models.finetune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
