"""Batch normalization: the layer as the factory places it, and the notes' other test-time
method, population statistics after training.

``batchnorm(features, kind=...)`` (``models.batchnorm``) is the layer the factory puts between
an affine layer and its activation, as the notes place it: ``BatchNorm1d`` over the (N, C)
outputs of a Linear, ``BatchNorm2d`` over the (N, C, H, W) maps of a Conv2d, torch's defaults
(eps 1e-5, momentum 0.1, gamma 1, beta 0). The affine layer before it needs no bias: beta
takes its place.

During training each batchnorm layer keeps exponential running averages of its batch mean and
variance, and eval mode uses them. Those averages lag behind the weights (they mix statistics of
earlier, different networks). ``recompute_batchnorm_stats`` replaces them by the statistics of
the trained network over the whole training set.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models.errors import ModelError
from models.registry import BATCHNORMS

__all__ = ["batchnorm", "recompute_batchnorm_stats"]

_BatchNorm = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d share it


def batchnorm(features: int, *, kind: str) -> nn.Module:
    """A fresh batchnorm layer over ``features`` channels, as the factory places it.

    ``kind`` is a name of ``models.registry.BATCHNORMS`` (UnknownNameError lists them): "1d"
    for the (N, C) outputs of a Linear, "2d" for the (N, C, H, W) maps of a Conv2d. Before a
    maxout of k pieces, ``features`` is the affine layer's k * units: batchnorm normalizes each
    piece.
    """
    layer = BATCHNORMS.get(kind)
    if isinstance(features, bool) or not isinstance(features, int) or features < 1:
        raise ModelError(f"models.batchnorm: features must be an integer >= 1 (the channels "
                         f"of the layer before it), got {features!r}")
    module: nn.Module = layer(features)
    return module


class _Moments:
    """Per-channel count, sum and sum of squares of a batchnorm layer's inputs, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: Tensor | float = 0.0
        self.sum_sq: Tensor | float = 0.0

    def add(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        z = inputs[0].double()  # (B, C) or (B, C, H, W): one statistic per channel C
        dims = [d for d in range(z.dim()) if d != 1]
        self.count += z.numel() // z.shape[1]
        self.sum = self.sum + z.sum(dims)
        self.sum_sq = self.sum_sq + (z * z).sum(dims)

    def mean_var(self) -> tuple[Tensor, Tensor]:
        mean = torch.as_tensor(self.sum) / self.count
        var = (torch.as_tensor(self.sum_sq) / self.count - mean * mean).clamp_min(0)
        return mean, var * self.count / (self.count - 1)  # unbiased, as torch keeps it


@torch.no_grad()
def recompute_batchnorm_stats(model: nn.Module, x: Tensor, *, batch_size: int = 256) -> None:
    """Set every trainable batchnorm's running mean/var to its input's mean/var over ``x``.

    One pass over ``x`` (the training inputs, (N, ...)) in batches of at most ``batch_size``,
    with the model in train mode, so each batchnorm normalizes by batch statistics as in
    training, and dropout switched off, since the statistics are for the network at test time.
    Each layer's mean and (unbiased, as torch keeps it) variance are accumulated exactly over
    all N inputs in float64, so unequal batch sizes carry their proper weight; torch's
    cumulative average (``momentum=None``) would weigh every batch alike.

    Batchnorm layers in frozen blocks (``models.finetune``) keep their statistics: they are part
    of the fixed feature extractor the classifier was trained on. Leaves the model in eval mode.
    """
    n = x.shape[0]
    if n < 2 or batch_size < 2:
        raise ModelError(
            "recomputing batchnorm statistics needs >= 2 inputs and batch_size >= 2, "
            f"got {n} inputs and batch_size {batch_size}"
        )
    model.train()  # frozen blocks stay in eval (Network.train): their layers are skipped below
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    layers = [
        m
        for m in model.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
    ]
    moments = {layer: _Moments() for layer in layers}
    hooks = [layer.register_forward_pre_hook(moments[layer].add) for layer in layers]
    try:
        # Nearly equal chunks of at most batch_size, except where that would leave a single
        # input, which batchnorm cannot normalize in train mode: then fewer, larger chunks.
        for chunk in x.tensor_split(min(math.ceil(n / batch_size), n // 2)):
            model(chunk)
    finally:
        for hook in hooks:
            hook.remove()
    for layer in layers:
        mean, var = moments[layer].mean_var()
        assert layer.running_mean is not None and layer.running_var is not None  # tracked above
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
    model.eval()
