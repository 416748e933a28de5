"""Each activation computes the notes' formula; maxout's gradient is right; gains are right."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models import ACTIVATIONS, ModelConfig, build_model
from models.activations import Activation, Maxout, maxout_second_moment

CFG = ModelConfig(leaky_slope=0.2, elu_alpha=0.7, maxout_k=3)


def _activation(name: str, cfg: ModelConfig = CFG) -> Activation:
    return ACTIVATIONS.get(name)(cfg)


# The notes' formulas, written independently of torch.nn.
FORMULAS = {
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "relu": lambda x: torch.maximum(torch.zeros_like(x), x),
    "leaky_relu": lambda x: torch.maximum(0.2 * x, x),
    "prelu": lambda x: torch.maximum(0.2 * x, x),  # at its initial slope
    "elu": lambda x: torch.where(x > 0, x, 0.7 * (torch.exp(x) - 1)),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_module_computes_the_notes_formula(name: str) -> None:
    x = torch.linspace(-5, 5, 101, dtype=torch.float64).reshape(1, 101)  # (N=1, width=101)
    module = _activation(name).module(101).double()
    torch.testing.assert_close(module(x), FORMULAS[name](x))


def test_every_activation_is_covered() -> None:
    assert set(FORMULAS) | {"maxout"} == set(ACTIVATIONS.names())


def test_maxout_takes_the_max_of_k_affine_pieces() -> None:
    # Maxout(x) = max(w1.x + b1, ..., wk.x + bk): piece p of unit j is channel p*H + j.
    w = torch.randn(3, 4, 5)  # (k, H, D)
    b = torch.randn(3, 4)  # (k, H)
    x = torch.randn(7, 5)  # (N, D)
    pieces = torch.einsum("khd,nd->nkh", w, x) + b  # (N, k, H)
    expected = pieces.max(dim=1).values  # (N, H)
    affine = pieces.reshape(7, 12)  # what a Linear(D, k*H) with weight w.reshape(12, 5) outputs
    torch.testing.assert_close(Maxout(3)(affine), expected)


def test_maxout_on_feature_maps_pools_over_channel_pieces() -> None:
    z = torch.randn(2, 3 * 4, 5, 5)  # (N, k*C, H, W)
    out = Maxout(3)(z)
    assert out.shape == (2, 4, 5, 5)
    torch.testing.assert_close(out, torch.stack([z[:, 0:4], z[:, 4:8], z[:, 8:12]]).amax(0))


@pytest.mark.parametrize("shape", [(4, 3 * 5), (2, 3 * 2, 3, 3)], ids=["flat", "maps"])
def test_maxout_gradcheck(shape: tuple[int, ...]) -> None:
    # float64, random input: ties (where max is not differentiable) have probability zero.
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Maxout(3), (x,))


def test_maxout_layer_gradcheck_through_a_built_block() -> None:
    cfg = ModelConfig(hidden=(3,), activation="maxout", maxout_k=2, init="xavier")
    model = build_model(cfg, input_shape=(4,), num_classes=2).double()
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))


def test_maxout_keeps_widths_and_multiplies_parameters_by_k() -> None:
    def count(cfg: ModelConfig) -> int:
        model = build_model(cfg, input_shape=(10,), num_classes=3)
        return sum(p.numel() for p in model.features.parameters())

    relu = ModelConfig(hidden=(8, 6), activation="relu")
    for k in (2, 3):
        maxout = ModelConfig(hidden=(8, 6), activation="maxout", maxout_k=k)
        assert count(maxout) == k * count(relu)
        model = build_model(maxout, input_shape=(10,), num_classes=3)
        assert [b.linear.out_features for b in model.features] == [8 * k, 6 * k]
        assert model.classifier.in_features == 6  # the width the user wrote
        with torch.no_grad():
            h = model.features(torch.randn(4, 10))
        assert h.shape == (4, 6)


def test_leaky_slope_is_configurable_with_the_notes_default() -> None:
    assert ModelConfig().leaky_slope == 0.01
    module = _activation("leaky_relu", ModelConfig(leaky_slope=0.3)).module(1)
    assert module(torch.tensor([[-2.0]])).item() == pytest.approx(-0.6)


def test_prelu_slope_is_learned_per_unit() -> None:
    module = _activation("prelu").module(4)
    params = list(module.parameters())
    assert len(params) == 1 and params[0].shape == (4,)
    torch.testing.assert_close(params[0].detach(), torch.full((4,), 0.2))
    x = -torch.ones(3, 4)
    x[:, 0] = 1.0  # unit 0 sees only positive inputs: its slope gets no gradient
    module(x).sum().backward()
    grad = params[0].grad
    assert grad is not None
    assert grad[0] == 0 and (grad[1:] == -3).all()  # d/da of a*x summed over 3 inputs x = -1


def test_elu_alpha_is_configurable() -> None:
    module = _activation("elu", ModelConfig(elu_alpha=2.0)).module(1)
    assert module(torch.tensor([[-50.0]])).item() == pytest.approx(-2.0)  # saturates at -alpha


def test_rectifier_gains_have_closed_forms() -> None:
    assert _activation("relu").gain == pytest.approx(math.sqrt(2))
    assert _activation("leaky_relu").gain == pytest.approx(math.sqrt(2 / (1 + 0.2**2)))
    assert _activation("prelu").gain == pytest.approx(math.sqrt(2 / (1 + 0.2**2)))
    assert maxout_second_moment(2) == pytest.approx(1.0, abs=1e-9)  # E[max(z1, z2)^2] = 1


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_gain_keeps_the_second_moment_at_unit_scale(name: str) -> None:
    # The rule every gain follows: gain^2 * E[f(z)^2] = 1 for z ~ N(0, 1), z of the width the
    # affine layer produces (k*H for maxout). Checked by Monte Carlo on the built module.
    activation = _activation(name)
    width = 1000
    z = torch.randn(2000, activation.pieces * width, dtype=torch.float64)
    with torch.no_grad():
        second_moment = activation.module(width).double()(z).pow(2).mean().item()
    assert activation.gain**2 * second_moment == pytest.approx(1.0, rel=0.02)


def test_builders_return_fresh_modules() -> None:
    activation = _activation("prelu")
    a, b = activation.module(3), activation.module(3)
    assert isinstance(a, nn.PReLU) and a is not b
    assert a.weight is not b.weight  # each layer learns its own slopes
