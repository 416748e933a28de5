"""One registry per kind (activation, initializer, architecture, batchnorm kind): the single
source of names.

Torch-free on purpose: the study-file validator reads the names from here without importing
torch, and the factory resolves a name to its builder through the same entry, lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from models.errors import UnknownNameError

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "BATCHNORMS", "INITIALIZERS", "Registry"]


class Registry:
    """Name -> builder, where the builder is named as ``"module:attribute"`` and imported on use."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def check(self, name: object) -> str:
        if name not in self:
            raise UnknownNameError(self.kind, name, self.names())
        return name  # type: ignore[return-value]

    def get(self, name: object) -> Any:
        module, attr = self._entries[self.check(name)].split(":")
        return getattr(importlib.import_module(module), attr)


ACTIVATIONS = Registry(
    "activation",
    {
        "sigmoid": "models.activations:sigmoid",
        "tanh": "models.activations:tanh",
        "relu": "models.activations:relu",
        "leaky_relu": "models.activations:leaky_relu",
        "prelu": "models.activations:prelu",
        "elu": "models.activations:elu",
        "maxout": "models.activations:maxout",
    },
)

INITIALIZERS = Registry(
    "initializer",
    {
        "zero": "models.init:zero",
        "constant": "models.init:constant",
        "normal": "models.init:normal",
        "xavier": "models.init:xavier_normal",
        "xavier_uniform": "models.init:xavier_uniform",
        "he": "models.init:he_normal",
        "he_uniform": "models.init:he_uniform",
    },
)

ARCHITECTURES = Registry(
    "architecture",
    {
        "mlp": "models.mlp:build_mlp",
        "convnet": "models.convnet:build_convnet",
    },
)

#: ``models.batchnorm``'s kinds: over (N, C) features after a Linear, over (N, C, H, W) maps
#: after a Conv2d.
BATCHNORMS = Registry(
    "batchnorm kind",
    {
        "1d": "torch.nn:BatchNorm1d",
        "2d": "torch.nn:BatchNorm2d",
    },
)
