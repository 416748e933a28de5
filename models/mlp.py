"""``mlp``: fully connected hidden layers of the widths the user wrote, then a linear classifier."""

from __future__ import annotations

import math

from torch import nn

from models._network import Network, new_block
from models.config import ModelConfig
from models.init import init_affine
from models.normalization import batchnorm
from models.registry import ACTIVATIONS

__all__ = ["build_mlp"]


def build_mlp(cfg: ModelConfig, *, input_shape: tuple[int, ...], num_classes: int) -> Network:
    """Flatten (N, *input_shape) -> (N, D), then ``len(cfg.hidden)`` blocks, then the classifier.

    Block i is Linear(d, k*H_i) -> [BatchNorm1d(k*H_i)] -> act -> [Dropout] with k the
    activation's pieces (maxout_k for maxout, else 1) and H_i = cfg.hidden[i]. With batchnorm
    the Linear has no bias: batchnorm's beta replaces it.
    """
    activation = ACTIVATIONS.get(cfg.activation)(cfg)
    blocks: list[nn.Module] = []
    d = math.prod(input_shape)
    for width in cfg.hidden:
        out = width * activation.pieces
        blocks.append(
            new_block(
                linear=nn.Linear(d, out, bias=not cfg.batchnorm),
                width=width,
                activation=activation,
                cfg=cfg,
                norm=batchnorm(out, kind="1d") if cfg.batchnorm else nn.Identity(),
            )
        )
        d = width
    classifier = nn.Linear(d, num_classes)
    init_affine(classifier, cfg=cfg, gain=1.0)  # no activation follows the scores
    return Network(
        stem=nn.Flatten(),
        features=nn.Sequential(*blocks),
        head=nn.Identity(),
        classifier=classifier,
    )
