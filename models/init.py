"""Weight initializers, as the notes write them.

Every initializer has one signature, ``(weight, *, cfg, gain) -> None``, and fills ``weight`` in
place. ``gain`` is the He gain of the activation that follows the layer (``Activation.gain``;
1.0 for the classifier, which no activation follows); only He uses it. The block builders zero
every bias; batchnorm starts at gamma = 1, beta = 0.

- ``zero`` / ``constant``: every unit of a layer starts identical and, by symmetry, stays
  identical under gradient descent: the notes' "VERY BAD IDEA", kept so studies can show it.
- ``normal``: N(0, init_std^2), the notes' "small random numbers" (std 0.01 by default).
- ``xavier_normal`` / ``xavier_uniform``: std = 1/sqrt(fan_in), the notes'
  ``randn(fan_in, fan_out) / sqrt(fan_in)``. Glorot's paper averages fan_in and fan_out; the
  notes (and Caffe's "xavier") use fan_in, which is what keeps the forward variance of a linear
  layer. No activation gain: with relu this is the init whose variance halves layer by layer.
- ``he_normal`` / ``he_uniform``: std = gain/sqrt(fan_in); for relu the notes'
  ``randn / sqrt(fan_in/2)``, for leaky_relu/prelu the slope's gain ``sqrt(2/(1+slope^2))``.

The uniform variants draw from U(-b, b) with b = sqrt(3) * std, the same variance as the normal
ones. ``fan_in`` is the number of products one output sums: ``in_features`` for a Linear
weight (out, in), ``in_channels * kh * kw`` for a Conv2d weight (out, in, kh, kw). A maxout
layer's k pieces share the fan_in of an ordinary layer: k only multiplies the outputs.

``init_affine`` is how the factory initializes one layer (weight by the initializer, bias zero);
``initialize`` (``models.initialize``) applies it to every Linear/Conv of a user's own network.
"""

from __future__ import annotations

import math
from typing import Protocol, TypeVar

import torch
from torch import Tensor, nn

from models._options import part_config
from models.activations import ActivationModule
from models.config import ModelConfig
from models.errors import ModelError
from models.registry import ACTIVATIONS, INITIALIZERS

__all__ = [
    "AFFINE_LAYERS",
    "Initializer",
    "constant",
    "fan_in",
    "he_normal",
    "he_uniform",
    "init_affine",
    "initialize",
    "normal",
    "xavier_normal",
    "xavier_uniform",
    "zero",
]


class Initializer(Protocol):
    """The interface every entry of ``models.registry.INITIALIZERS`` implements."""

    def __call__(self, weight: Tensor, *, cfg: ModelConfig, gain: float) -> None: ...


def fan_in(weight: Tensor) -> int:
    """Inputs summed by one output unit: (out, in) -> in; (out, in, kh, kw) -> in * kh * kw."""
    if weight.dim() < 2:
        raise ValueError(
            f"fan_in needs a weight with >= 2 dimensions, got shape {tuple(weight.shape)}"
        )
    return weight.shape[1] * math.prod(weight.shape[2:])


@torch.no_grad()
def zero(weight: Tensor, *, cfg: ModelConfig, gain: float) -> None:
    weight.zero_()


@torch.no_grad()
def constant(weight: Tensor, *, cfg: ModelConfig, gain: float) -> None:
    weight.fill_(cfg.init_constant)


@torch.no_grad()
def normal(weight: Tensor, *, cfg: ModelConfig, gain: float) -> None:
    weight.normal_(0.0, cfg.init_std)


@torch.no_grad()
def xavier_normal(weight: Tensor, *, cfg: ModelConfig, gain: float) -> None:
    weight.normal_(0.0, 1.0 / math.sqrt(fan_in(weight)))


@torch.no_grad()
def xavier_uniform(weight: Tensor, *, cfg: ModelConfig, gain: float) -> None:
    bound = math.sqrt(3.0 / fan_in(weight))
    weight.uniform_(-bound, bound)


@torch.no_grad()
def he_normal(weight: Tensor, *, cfg: ModelConfig, gain: float) -> None:
    weight.normal_(0.0, gain / math.sqrt(fan_in(weight)))


@torch.no_grad()
def he_uniform(weight: Tensor, *, cfg: ModelConfig, gain: float) -> None:
    bound = gain * math.sqrt(3.0 / fan_in(weight))
    weight.uniform_(-bound, bound)


#: The layers an initializer fills: their weight is (out, in) or (out, in, *kernel).
AFFINE_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

_M = TypeVar("_M", bound=nn.Module)


def init_affine(layer: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d, *, cfg: ModelConfig,
                gain: float) -> None:
    """Weight by the configured initializer, bias zero (the notes initialize only weights)."""
    INITIALIZERS.get(cfg.init)(layer.weight, cfg=cfg, gain=gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def initialize(
    module: _M,
    scheme: str,
    *,
    activation: str | ActivationModule | None,
    init_std: float | None = None,
    init_constant: float | None = None,
) -> _M:
    """Initialize every Linear and Conv1d/2d/3d weight in ``module`` (itself included,
    recursively) by ``scheme``, and zero their biases, as the factory does; returns ``module``.

    ``scheme`` is a name of ``models.registry.INITIALIZERS`` (UnknownNameError lists them).
    ``activation`` is what follows these layers, for He's gain: a module from
    ``models.activation`` (its own gain, with its slope, alpha or k), a name of
    ``models.registry.ACTIVATIONS`` (the gain at the default options), or ``None`` when none
    follows (gain 1, as the factory's classifier). It is required because He with the wrong
    gain is Xavier. ``init_std`` (normal) and ``init_constant`` (constant) default as in
    ``ModelConfig``. Batchnorm layers and anything else keep their values.

    The factory's initial weights: ``torch.manual_seed(s)``, build a layer of the factory's
    shape, then ``initialize(layer, scheme, activation=...)``; layers draw in the order of
    ``module.modules()``. Initialize the classifier separately, with ``activation=None``.
    """
    cfg = part_config("models.initialize", init=scheme, init_std=init_std,
                      init_constant=init_constant)
    gain = _gain(activation)
    layers = [m for m in module.modules() if isinstance(m, AFFINE_LAYERS)]
    if not layers:
        kinds = ", ".join(t.__name__ for t in AFFINE_LAYERS)
        raise ModelError(f"models.initialize: {type(module).__name__} has no layer to initialize "
                         f"(it initializes the weights of {kinds})")
    for layer in layers:
        init_affine(layer, cfg=cfg, gain=gain)  # type: ignore[arg-type]  # AFFINE_LAYERS
    return module


def _gain(activation: str | ActivationModule | None) -> float:
    if activation is None:
        return 1.0
    if isinstance(activation, ActivationModule):
        return activation.gain
    if isinstance(activation, str):
        ACTIVATIONS.check(activation)
        return float(ACTIVATIONS.get(activation)(ModelConfig()).gain)
    raise ModelError(
        f"models.initialize: activation must be a name ({', '.join(ACTIVATIONS.names())}), a "
        f"module from models.activation, or None; got {type(activation).__name__}"
    )
