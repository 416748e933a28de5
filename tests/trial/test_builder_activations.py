"""Activation statistics for a network of the user's own (``model.builder``): found by the
activation modules of ``models.activation``, in forward order; none without them, with why."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import models
from hpo.trial.instruments import activation_stats, activations_found, block_stats
from hpo.trial.metrics import activation_metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


class _Builder(nn.Module):
    """A user's network from the public parts. Registered tanh-first, run relu-first: the
    statistics follow the forward pass, not the order of the attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.late = models.activation("tanh")
        self.early = models.activation("relu")
        self.fc1 = nn.Linear(3, 8, bias=False)
        self.bn = models.batchnorm(8, kind="1d")
        self.fc2 = nn.Linear(8, 5)
        self.head = nn.Linear(5, 2)
        models.initialize(self.fc1, "he", activation=self.early)
        models.initialize(self.fc2, "xavier", activation=self.late)
        models.initialize(self.head, "xavier", activation=None)

    def forward(self, x: Tensor) -> Tensor:  # (N, 3) -> (N, 2)
        h1 = self.early(self.bn(self.fc1(x)))  # (N, 8)
        h2 = self.late(self.fc2(h1))  # (N, 5)
        scores: Tensor = self.head(h2)
        return scores


def _expected(model: _Builder, x: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        model.eval()
        h1 = model.early(model.bn(model.fc1(x)))
        return h1, model.late(model.fc2(h1))


def test_a_builders_network_gets_statistics_in_forward_order() -> None:
    model = _Builder()
    x = torch.randn(64, 3)
    stats = activation_stats(model, x, "anything")  # each module names its own activation
    assert model.training  # evaluation mode only while measuring
    h1, h2 = _expected(model, x)
    assert list(stats) == ["layer1", "layer2"]
    for layer, a, name in (("layer1", h1, "relu"), ("layer2", h2, "tanh")):
        assert torch.equal(stats[layer]["values"], a.flatten())
        expected = {k: v.item() for k, v in block_stats(a, name).items()}
        assert {k: v for k, v in stats[layer].items() if k != "values"} == expected
    assert set(activation_metrics(stats)) == {
        "act.layer1.mean", "act.layer1.std", "act.layer1.dead",  # relu: dead units
        "act.layer2.mean", "act.layer2.std", "act.layer2.saturated",  # tanh: saturation
    }
    assert activations_found(model) is None
    assert not any(m._forward_hooks for m in model.modules())  # no hook left behind


def test_a_module_called_twice_is_two_layers() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = models.activation("elu")

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.act(self.fc(self.act(x)))
            return out

    model = Twice()
    x = torch.randn(8, 4)
    stats = activation_stats(model, x)
    assert list(stats) == ["layer1", "layer2"]
    with torch.no_grad():
        assert torch.equal(stats["layer1"]["values"], F.elu(x).flatten())
        assert torch.equal(stats["layer2"]["values"], model(x).flatten())


@pytest.mark.parametrize(("model", "says"), [
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)),
     "it uses torch's nn.ReLU, nn.Tanh"),
    (nn.Sequential(nn.Linear(3, 2)), "its activations are functions in forward(), or it has none"),
], ids=["torch-modules", "none"])
def test_a_network_without_the_parts_gets_nothing_and_a_reason(model: nn.Module,
                                                               says: str) -> None:
    assert activation_stats(model, torch.randn(5, 3), "relu") == {}
    reason = activations_found(model)
    assert reason is not None
    assert reason.startswith("Sequential has no activation module from models.activation (")
    assert says in reason
    assert reason.endswith("build them with models.activation(name) to get their statistics")


def test_the_factorys_network_is_found_and_measured_as_before() -> None:
    for arch, shape in (("mlp", (6,)), ("convnet", (2, 4, 4))):
        cfg = models.ModelConfig(arch=arch, hidden=(5, 4), activation="sigmoid", batchnorm=True)
        model = models.build_model(cfg, input_shape=shape, num_classes=3)
        x = torch.randn(16, *shape)
        assert activations_found(model) is None
        named, own = activation_stats(model, x, "sigmoid"), activation_stats(model, x)
        assert list(named) == list(own) == ["layer1", "layer2"]
        for layer in named:
            assert named[layer].keys() == own[layer].keys()
            assert torch.equal(named[layer]["values"], own[layer]["values"])
            assert named[layer]["saturated"] == own[layer]["saturated"]


@pytest.fixture(scope="module")
def example_build() -> Iterator[Callable[..., nn.Module]]:
    """``build`` of the shipped example, search_spaces/own_model/resnet.py."""
    name = "_own_model_resnet"
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "search_spaces" / "own_model" / "resnet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclass looks its module up while being made
    try:
        spec.loader.exec_module(module)
        yield module.build
    finally:
        del sys.modules[name]


@pytest.mark.parametrize("activation", ["relu", "maxout", "prelu"])
@pytest.mark.parametrize("batchnorm", [True, False], ids=["bn", "plain"])
def test_the_shipped_resnet_is_measured_layer_by_layer(
        example_build: Callable[..., nn.Module], activation: str, batchnorm: bool) -> None:
    config = {"depth": 2, "width": 8, "activation": activation, "batchnorm": batchnorm,
              "init": "he", "maxout_k": 3}
    model = example_build(config, (1, 8, 8), 10)
    x = torch.randn(32, 1, 8, 8)
    assert model(x).shape == (32, 10)
    stats = activation_stats(model, x)
    # the stem's activation, then two per residual block
    assert list(stats) == [f"layer{i}" for i in range(1, 2 + 2 * config["depth"])]
    sizes = [s["values"].numel() for s in stats.values()]
    assert sizes == [32 * 8 * 8 * 8] + [32 * 8 * 4 * 4] * 4  # (N, W, 8, 8), then pooled
    assert all("dead" in s for s in stats.values())  # the relu family
