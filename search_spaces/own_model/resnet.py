"""A small residual network of one's own for 8x8 digits, built from the factory's parts.

hpo calls ``build(config, input_shape, num_classes)`` for every trial (resnet.yaml names it as
``model.builder: resnet:build``) and trains what it returns with its own loop, metrics and
checks. ``config`` is the trial's flat configuration: the keys under ``model:`` and ``train:``.

The parts come from ``models``, so the lecture's choices work here as in hpo's own networks:
``models.activation`` (whose modules hpo finds for the activation statistics),
``models.initialize`` (He's gain for the activation that follows) and ``models.batchnorm``.

    stem:     conv3x3(C -> W) - bn - act - avgpool2          (N, C, 8, 8) -> (N, W, 4, 4)
    depth x:  x -> conv3x3 - bn - act - conv3x3 - bn, + x, act   (N, W, 4, 4) -> (N, W, 4, 4)
    head:     global average pooling - linear                (N, W, 4, 4) -> (N, classes)

Without batchnorm ("bn" above) each conv has a bias instead. An activation of k pieces
(maxout) gets convs k times wider, as in hpo's own networks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

import models

__all__ = ["Options", "ResNet", "build"]


@dataclass(frozen=True)
class Options:
    """The config keys this network reads; a default for each key the study leaves out."""

    width: int = 16  # channels of every conv
    depth: int = 2  # residual blocks; 0 is stem and classifier only
    activation: str = "relu"  # a name of models.ACTIVATIONS
    init: str = "he"  # a name of models.INITIALIZERS
    batchnorm: bool = True  # between each conv and what follows it
    # an activation's own options (None: models' defaults); models.activation checks them
    leaky_slope: float | None = None
    elu_alpha: float | None = None
    maxout_k: int | None = None

    @classmethod
    def of(cls, config: dict[str, Any]) -> Options:
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})

    def activation_module(self, features: int) -> models.ActivationModule:
        """A fresh activation for ``features`` units (prelu learns a slope per channel)."""
        return models.activation(self.activation, features=features,
                                 leaky_slope=self.leaky_slope, elu_alpha=self.elu_alpha,
                                 maxout_k=self.maxout_k)


class _ConvUnit(nn.Module):
    """conv3x3 -> [batchnorm]: (N, c_in, H, W) -> (N, pieces * c_out, H, W).

    The conv puts out ``pieces`` values per unit for the activation after it (maxout takes the
    max over k pieces; every other activation has 1). With batchnorm the conv has no bias:
    batchnorm's beta takes its place.
    """

    def __init__(self, c_in: int, c_out: int, *, pieces: int, opts: Options) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, pieces * c_out, kernel_size=3, padding=1,
                              bias=not opts.batchnorm)
        self.norm = (models.batchnorm(pieces * c_out, kind="2d") if opts.batchnorm
                     else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        z: Tensor = self.norm(self.conv(x))
        return z


class _Residual(nn.Module):
    """x -> unit - act - unit, + x, act. Two activation modules: each is its own layer in
    hpo's activation statistics."""

    def __init__(self, width: int, opts: Options) -> None:
        super().__init__()
        self.act1 = opts.activation_module(width)
        self.unit1 = _ConvUnit(width, width, pieces=self.act1.pieces, opts=opts)
        self.act2 = opts.activation_module(width)
        self.unit2 = _ConvUnit(width, width, pieces=self.act2.pieces, opts=opts)

    def forward(self, x: Tensor) -> Tensor:
        z = self.unit2(self.act1(self.unit1(x)))  # (N, pieces*W, H, W)
        # The skip joins every piece: max_p(z_p + x) = max_p(z_p) + x, so a maxout block is a
        # residual block too. x.repeat lays x out as the pieces are: channel p*W + j is x_j.
        skip = x.repeat(1, self.act2.pieces, 1, 1)
        out: Tensor = self.act2(z + skip)
        return out


class ResNet(nn.Module):
    """stem -> ``depth`` residual blocks -> global average pooling -> linear classifier."""

    def __init__(self, opts: Options, *, channels: int, num_classes: int) -> None:
        super().__init__()
        act = opts.activation_module(opts.width)
        # Halving the maps once, by averaging, makes every block 4x cheaper (a trial takes a
        # few seconds on one CPU) and keeps the mean of the features the classifier starts
        # from, hence the initial loss, lower than max pooling would.
        self.stem = nn.Sequential(
            _ConvUnit(channels, opts.width, pieces=act.pieces, opts=opts), act, nn.AvgPool2d(2))
        self.blocks = nn.Sequential(*(_Residual(opts.width, opts) for _ in range(opts.depth)))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (N, W, H, W) -> (N, W)
        self.classifier = nn.Linear(opts.width, num_classes)
        # Every conv is followed (after batchnorm, and the skip) by the activation: He's gain
        # for it. The classifier's scores have no activation after them: gain 1, as in hpo's
        # own networks.
        for part in (self.stem, *self.blocks):
            models.initialize(part, opts.init, activation=act)
        models.initialize(self.classifier, opts.init, activation=None)

    def forward(self, x: Tensor) -> Tensor:
        scores: Tensor = self.classifier(self.pool(self.blocks(self.stem(x))))
        return scores  # (N, num_classes)


def build(config: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network for inputs (N, *input_shape) = (N, C, H, W) and ``num_classes`` classes."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet needs images (C, H, W), got input_shape {input_shape}")
    return ResNet(Options.of(config), channels=input_shape[0], num_classes=num_classes)


if __name__ == "__main__":  # a quick look: python resnet.py
    net = build({"width": 8, "depth": 1}, (1, 8, 8), 10)
    print(net)
    print(net(torch.randn(2, 1, 8, 8)).shape)  # (2, 10)
