"""The activation functions the notes teach, each behind one small interface.

A name in ``models.registry.ACTIVATIONS`` points at a builder ``f(cfg) -> Activation``. The
``Activation`` it returns tells the block builder three things:

- ``pieces``: how many outputs of the affine layer feed one unit (1; maxout: k). The block builds
  its affine layer ``pieces`` times wider, so the widths the user wrote stay the unit counts.
- ``module(width)``: a fresh ``nn.Module`` for a layer of ``width`` units.
- ``gain``: the factor He initialization multiplies ``1/sqrt(fan_in)`` by for the affine layer
  *before* this activation (see ``models.init``).

One rule gives every gain: He et al.'s derivation, ``Var(y_l) = fan_in * Var(w) * E[x_{l-1}^2]``
with ``x = f(y)``, keeps the pre-activation variance at 1 from layer to layer when
``Var(w) = gain^2 / fan_in`` with ``gain = 1 / sqrt(E[f(z)^2])``, ``z ~ N(0, 1)``.

  ========== ============================ ================================================
  activation gain                         note
  ========== ============================ ================================================
  relu       sqrt(2)                      E[relu(z)^2] = 1/2; the notes' ``sqrt(fan_in/2)``
  leaky_relu sqrt(2 / (1 + slope^2))      the negative half keeps slope^2 of its moment
  prelu      same, with the initial slope the slope is learned; it starts at leaky_slope
  maxout     1 / sqrt(E[max_k^2])         max of k unit Gaussians; exactly 1 for k = 2
  elu        1 / sqrt(E[elu(z)^2])        about 1.24 for alpha = 1 (torch has no value;
                                          sqrt(2) would grow the variance ~12% a layer)
  tanh       1 / sqrt(E[tanh(z)^2])       about 1.59; torch's calculate_gain says 5/3
  sigmoid    1 / sqrt(E[sigmoid(z)^2])    about 1.85; torch's calculate_gain says 1, which
                                          shrinks the variance (sigmoid is not centered)
  ========== ============================ ================================================

For the rectifiers (relu, leaky_relu, prelu, maxout) the rule holds at every scale, since
``f(c z) = c f(z)``; for elu, tanh and sigmoid it holds at unit variance, which it makes a
stable fixed point. Xavier ignores the gain on purpose: the notes' Xavier is plain
``randn / sqrt(fan_in)``, and the lecture's point that "with relu, Xavier's variance halves
layer by layer" depends on it.

Every module built here is an ``ActivationModule``: torch's own class (``nn.ReLU``, ...) marked
with its registry ``name``, its ``gain`` and its ``pieces``, so the instruments find a
network's activations by ``model.modules()`` whoever assembled it. ``activation(name, ...)`` is
the public way in (``models.activation``), for a user's own network; the factory's blocks build
theirs through the same ``Activation.module``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import ClassVar

from torch import Tensor, nn

from models._options import part_config
from models.config import ModelConfig
from models.errors import ModelError
from models.registry import ACTIVATIONS

__all__ = [
    "Activation",
    "ActivationModule",
    "Maxout",
    "activation",
    "elu",
    "leaky_relu",
    "maxout",
    "maxout_second_moment",
    "prelu",
    "relu",
    "sigmoid",
    "tanh",
]


class ActivationModule(nn.Module):
    """The mark of an activation module built here: a network's activations are the
    ``ActivationModule`` instances among its ``modules()``.

    Each concrete class is also torch's own (``ReLU`` is an ``nn.ReLU``), so its forward, its
    parameters (prelu's slopes) and its state-dict keys are torch's. Set by ``Activation.module``
    (derived, not configuration):

    - ``name``: its name in ``models.registry.ACTIVATIONS``;
    - ``gain``: He's gain for the affine layer before it (``models.initialize`` reads it);
    - ``pieces``: affine outputs per unit (maxout: k; else 1), so the layer before it must
      produce ``pieces * features`` outputs (channels) for ``features`` units.
    """

    name: str
    gain: float
    pieces: int = 1


class Sigmoid(ActivationModule, nn.Sigmoid):
    """``nn.Sigmoid``, marked (see ``ActivationModule``)."""


class Tanh(ActivationModule, nn.Tanh):
    """``nn.Tanh``, marked (see ``ActivationModule``)."""


class ReLU(ActivationModule, nn.ReLU):
    """``nn.ReLU``, marked (see ``ActivationModule``)."""


class LeakyReLU(ActivationModule, nn.LeakyReLU):
    """``nn.LeakyReLU``, marked (see ``ActivationModule``)."""


class PReLU(ActivationModule, nn.PReLU):
    """``nn.PReLU``, marked (see ``ActivationModule``)."""


class ELU(ActivationModule, nn.ELU):
    """``nn.ELU``, marked (see ``ActivationModule``)."""


class Activation(ABC):
    """What a hidden block needs to know about its activation function."""

    name: ClassVar[str]  # its name in models.registry.ACTIVATIONS
    pieces: int = 1  # affine outputs per unit; the affine layer is built pieces x wider

    def module(self, width: int | None = None) -> ActivationModule:
        """A fresh module for ``width`` units: (N, pieces*width, ...) -> (N, width, ...).

        Only prelu reads ``width`` (one learned slope per unit); ``None`` gives it one slope
        shared by all units, He et al.'s channel-shared variant.
        """
        module = self._new(width)
        module.name, module.gain, module.pieces = self.name, self.gain, self.pieces
        return module

    @abstractmethod
    def _new(self, width: int | None) -> ActivationModule:
        """The bare module; ``module`` marks it."""

    @property
    @abstractmethod
    def gain(self) -> float:
        """He's gain for the affine layer before this activation (table in the module docstring)."""


class Maxout(ActivationModule):
    """Max over k linear pieces (Goodfellow et al. 2013): ``max(w1.x + b1, ..., wk.x + bk)``.

    Input (N, k*H) -> (N, H), or (N, k*C, H, W) -> (N, C, H, W). Piece p of unit j is input
    channel ``p*H + j``, so the affine weight before it, viewed as (k, H, fan_in), is k stacked
    ordinary weight matrices: ``linear.weight.view(k, H, -1)[p]`` is piece p.
    """

    def __init__(self, pieces: int) -> None:
        super().__init__()
        if pieces < 1:
            raise ValueError(f"`pieces >= 1` must hold, but got pieces={pieces}.")
        self.pieces = pieces
        self.name = "maxout"  # marked as Activation.module would: Maxout(k) is public
        self.gain = _maxout_gain(pieces)

    def forward(self, x: Tensor) -> Tensor:
        # (N, k*H, ...) -> (N, k, H, ...) -> (N, H, ...). amax splits the gradient evenly on
        # ties, so identical pieces (zero init) stay identical.
        n, channels, *space = x.shape
        pieces = x.reshape(n, self.pieces, channels // self.pieces, *space)
        return pieces.amax(dim=1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


@dataclass(frozen=True)
class _Sigmoid(Activation):
    name = "sigmoid"

    def _new(self, width: int | None) -> ActivationModule:
        return Sigmoid()

    @property
    def gain(self) -> float:
        return 1.0 / math.sqrt(_sigmoid_second_moment())


@dataclass(frozen=True)
class _Tanh(Activation):
    name = "tanh"

    def _new(self, width: int | None) -> ActivationModule:
        return Tanh()

    @property
    def gain(self) -> float:
        return 1.0 / math.sqrt(_tanh_second_moment())


@dataclass(frozen=True)
class _ReLU(Activation):
    name = "relu"

    def _new(self, width: int | None) -> ActivationModule:
        return ReLU()

    @property
    def gain(self) -> float:
        return math.sqrt(2.0)


@dataclass(frozen=True)
class _LeakyReLU(Activation):
    name = "leaky_relu"
    slope: float

    def _new(self, width: int | None) -> ActivationModule:
        return LeakyReLU(self.slope)

    @property
    def gain(self) -> float:
        return math.sqrt(2.0 / (1.0 + self.slope**2))


@dataclass(frozen=True)
class _PReLU(Activation):
    name = "prelu"
    initial_slope: float

    def _new(self, width: int | None) -> ActivationModule:
        # One learned slope per unit (per channel in a convnet), as in He et al. 2015; without
        # a width, one slope for the layer (their channel-shared variant).
        return PReLU(num_parameters=width or 1, init=self.initial_slope)

    @property
    def gain(self) -> float:
        return math.sqrt(2.0 / (1.0 + self.initial_slope**2))


@dataclass(frozen=True)
class _ELU(Activation):
    name = "elu"
    alpha: float

    def _new(self, width: int | None) -> ActivationModule:
        return ELU(alpha=self.alpha)

    @property
    def gain(self) -> float:
        return 1.0 / math.sqrt(_elu_second_moment(self.alpha))


@dataclass(frozen=True)
class _Maxout(Activation):
    name = "maxout"
    k: int

    @property
    def pieces(self) -> int:  # type: ignore[override]
        return self.k

    def _new(self, width: int | None) -> ActivationModule:
        return Maxout(self.k)

    @property
    def gain(self) -> float:
        return _maxout_gain(self.k)


def _maxout_gain(k: int) -> float:
    return 1.0 / math.sqrt(maxout_second_moment(k))


def _gaussian_expectation(g: Callable[[float], float]) -> float:
    """``E[g(z)]`` for ``z ~ N(0, 1)``: Simpson's rule on [-12, 12], accurate to ~1e-12 for the
    integrands here (the Gaussian tails beyond 12 carry less than 1e-30)."""
    n, lo, hi = 4800, -12.0, 12.0  # n even
    h = (hi - lo) / n
    total = 0.0
    for i in range(n + 1):
        x = lo + i * h
        weight = 1 if i in (0, n) else (4 if i % 2 else 2)
        total += weight * g(x) * math.exp(-0.5 * x * x)
    return total * h / 3.0 / math.sqrt(2.0 * math.pi)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@cache
def maxout_second_moment(k: int) -> float:
    """``E[max(z_1..z_k)^2]`` for iid ``z_i ~ N(0, 1)``: 1 for k = 1 and 2, 1.28 for 3, 1.55 for 4.

    The max of k iid unit Gaussians has density ``k phi(x) Phi(x)^(k-1)``.
    """
    return _gaussian_expectation(lambda x: x * x * k * _normal_cdf(x) ** (k - 1))


@cache
def _elu_second_moment(alpha: float) -> float:
    return _gaussian_expectation(lambda x: x * x if x > 0 else (alpha * math.expm1(x)) ** 2)


@cache
def _tanh_second_moment() -> float:
    return _gaussian_expectation(lambda x: math.tanh(x) ** 2)


@cache
def _sigmoid_second_moment() -> float:
    return _gaussian_expectation(lambda x: (1.0 / (1.0 + math.exp(-x))) ** 2)


# Builders: the registry's entries. Each reads only the config fields it needs.


def sigmoid(cfg: ModelConfig) -> Activation:
    return _Sigmoid()


def tanh(cfg: ModelConfig) -> Activation:
    return _Tanh()


def relu(cfg: ModelConfig) -> Activation:
    return _ReLU()


def leaky_relu(cfg: ModelConfig) -> Activation:
    return _LeakyReLU(slope=cfg.leaky_slope)


def prelu(cfg: ModelConfig) -> Activation:
    return _PReLU(initial_slope=cfg.leaky_slope)


def elu(cfg: ModelConfig) -> Activation:
    return _ELU(alpha=cfg.elu_alpha)


def maxout(cfg: ModelConfig) -> Activation:
    return _Maxout(k=cfg.maxout_k)


# The public entry point.


def activation(
    name: str,
    *,
    features: int | None = None,
    leaky_slope: float | None = None,
    elu_alpha: float | None = None,
    maxout_k: int | None = None,
) -> ActivationModule:
    """A fresh activation module, as the factory puts it after an affine layer.

    ``name`` is any name of ``models.registry.ACTIVATIONS`` (UnknownNameError lists them). The
    options are the ``ModelConfig`` fields that shape an activation, each checked by that
    field's rule (ModelError naming every bad one); ``None`` takes the field's default, and an
    activation ignores the options that are not its own, so a builder can pass them whatever
    activation its config names:

    - ``features``: the units the module puts out; only prelu reads it (one learned slope per
      unit, or per channel of (N, C, H, W) maps). Left out, prelu learns one shared slope.
    - ``leaky_slope`` (leaky_relu's slope, prelu's initial slope), ``elu_alpha``, ``maxout_k``.

    The module maps (N, pieces*F, ...) -> (N, F, ...), ``pieces`` being ``maxout_k`` for maxout
    and 1 otherwise: build the Linear/Conv before a maxout ``module.pieces`` times wider, as
    the factory does. ``module.gain`` is He's gain for that layer (``models.initialize``).
    """
    ACTIVATIONS.check(name)
    if features is not None and (
        isinstance(features, bool) or not isinstance(features, int) or features < 1
    ):
        raise ModelError(f"models.activation: features must be an integer >= 1 or None, "
                         f"got {features!r}")
    cfg = part_config("models.activation", activation=name, leaky_slope=leaky_slope,
                      elu_alpha=elu_alpha, maxout_k=maxout_k)
    spec: Activation = ACTIVATIONS.get(name)(cfg)
    return spec.module(features)
