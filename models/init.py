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
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from models.config import ModelConfig

__all__ = [
    "Initializer",
    "constant",
    "fan_in",
    "he_normal",
    "he_uniform",
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
