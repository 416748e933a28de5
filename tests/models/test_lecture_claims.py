"""The notes' claims about initialization and batchnorm, measured on built networks.

Every measurement feeds unit-Gaussian input through a network made by ``build_model`` and reads
the pre-activations (``.norm`` output) and activations (``.act`` output) with forward hooks, as
the lecture's experiment does (10 layers; 256 units here, 500 in the lecture, for speed).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import ACTIVATIONS, ModelConfig, build_model
from models._network import Network

Recorder = Callable[[nn.Module, Tensor], tuple[list[Tensor], list[Tensor]]]  # conftest.record

WIDTH, DEPTH, N = 256, 10, 1000


def _deep(**overrides: object) -> Network:
    cfg = ModelConfig(hidden=(WIDTH,) * DEPTH, **overrides)  # type: ignore[arg-type]
    return build_model(cfg, input_shape=(WIDTH,), num_classes=10)


def _unit_gaussian() -> Tensor:
    return torch.randn(N, WIDTH)  # (N, D)


def _per_layer_ratio(variances: list[float]) -> float:
    """Geometric mean of var[l+1] / var[l]: how much each layer multiplies the variance by."""
    return (variances[-1] / variances[0]) ** (1 / (len(variances) - 1))


# W = 0 (or some constant): "All parameters in same layer will update identically."


def _spread_across_units(t: Tensor) -> float:
    """Largest difference between unit 0 and any other unit (dim 1), relative to the scale."""
    return ((t - t[:, :1]).abs().max() / (t.abs().max() + 1e-12)).item()


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
@pytest.mark.parametrize("init", ["zero", "constant", "normal"])
def test_constant_init_makes_units_identical_and_training_keeps_them(
    arch: str, init: str, record: Recorder
) -> None:
    # sigmoid: sigmoid(0) = 1/2 is not 0, so even the zero init's hidden weights do move.
    shape = (12,) if arch == "mlp" else (3, 8, 8)
    cfg = ModelConfig(
        arch=arch, hidden=(8, 8), activation="sigmoid", init=init, init_constant=0.3, init_std=0.5
    )
    model = build_model(cfg, input_shape=shape, num_classes=3)
    x, y = torch.randn(32, *shape), torch.arange(32) % 3
    start = [block.linear.weight.detach().clone() for block in model.features]

    def spreads() -> list[float]:
        _, acts = record(model, x)  # (N, H) or (N, C, H, W)
        weights = [block.linear.weight.detach() for block in model.features]  # (out, in, ...)
        return [_spread_across_units(w.flatten(1).T) for w in weights] + [
            _spread_across_units(a) for a in acts
        ]

    before = spreads()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(10):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    after = spreads()

    moved = [
        not torch.equal(block.linear.weight, w)
        for block, w in zip(model.features, start, strict=True)
    ]
    assert all(moved), "the hidden weights did not train: the test would show nothing"
    if init == "normal":  # the control: random init breaks the symmetry
        assert min(before + after) > 0.01
    else:
        assert max(before + after) < 1e-5


# Small random numbers: "distribution of activation in each hidden layer narrow down to zero".


def test_tanh_with_std_001_collapses_toward_zero_with_depth(record: Recorder) -> None:
    _, acts = record(_deep(activation="tanh", init="normal", init_std=0.01), _unit_gaussian())
    stds = [a.std().item() for a in acts]
    # each layer multiplies the std by about 0.01 * sqrt(256) = 0.16
    assert all(later < 0.25 * earlier for earlier, later in itertools.pairwise(stds))
    assert stds[-1] < 1e-6


def test_tanh_with_std_1_saturates(record: Recorder) -> None:
    # "What if we increase std to 1.00? ... will saturate to both extremes."
    _, acts = record(_deep(activation="tanh", init="normal", init_std=1.0), _unit_gaussian())
    for a in acts:
        assert (a.abs() > 0.99).float().mean().item() > 0.7


def test_tanh_with_xavier_keeps_activations_alive(record: Recorder) -> None:
    _, acts = record(_deep(activation="tanh", init="xavier"), _unit_gaussian())
    stds = [a.std().item() for a in acts]
    assert min(stds) > 0.15  # the lecture's plot: a slow decline, nowhere near zero
    assert stds[-1] > 0.3 * stds[0]


# "in ReLU activation, it statistically cut half of it's input, so variance halves in each layer"


def test_relu_halves_variance_per_layer_with_xavier_and_holds_with_he(record: Recorder) -> None:
    x = _unit_gaussian()
    pre_xavier, _ = record(_deep(activation="relu", init="xavier"), x)
    pre_he, _ = record(_deep(activation="relu", init="he"), x)
    xavier = _per_layer_ratio([p.var().item() for p in pre_xavier])
    he = _per_layer_ratio([p.var().item() for p in pre_he])
    assert 0.4 < xavier < 0.6
    assert 0.85 < he < 1.15


@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_he_holds_the_variance_for_every_activation(activation: str, record: Recorder) -> None:
    # Layer 1 sees the raw input, not an activation, so the ratio starts at layer 2.
    pre, _ = record(_deep(activation=activation, init="he"), _unit_gaussian())
    assert 0.85 < _per_layer_ratio([p.var().item() for p in pre[1:]]) < 1.15


# Batchnorm "explicitly try to maintain inputs to activation in unit gaussian".


def test_batchnorm_keeps_preactivations_unit_gaussian_at_train_time(record: Recorder) -> None:
    x = _unit_gaussian()
    collapsing = dict(activation="tanh", init="normal", init_std=0.01)
    pre_plain, _ = record(_deep(**collapsing), x)
    model = _deep(**collapsing, batchnorm=True)
    assert model.training
    pre_bn, _ = record(model, x)
    assert pre_plain[-1].std().item() < 1e-6  # what batchnorm rescues
    for p in pre_bn:  # (N, H): statistics per unit over the batch
        assert p.mean(0).abs().max().item() < 1e-4
        var = p.var(0, unbiased=False)
        assert var.min().item() > 0.99 and var.max().item() < 1.0 + 1e-4


def test_small_init_starts_at_log_num_classes() -> None:
    # Babysitting's first check: near-zero weights, no regularization -> loss ~ ln(C).
    model = _deep(activation="relu", init="normal", init_std=0.01)
    loss = F.cross_entropy(model(_unit_gaussian()), torch.randint(0, 10, (N,)))
    assert loss.item() == pytest.approx(math.log(10), abs=1e-3)
