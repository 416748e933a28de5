"""The factory's public parts (models.activation, models.initialize, models.batchnorm) build
exactly what the factory builds, and refuse what they do not know, naming what they do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import models
from models import (
    ACTIVATIONS,
    BATCHNORMS,
    INITIALIZERS,
    ActivationModule,
    ModelConfig,
    ModelError,
    UnknownNameError,
    build_model,
)
from models.activations import Maxout

ROOT = Path(__file__).resolve().parents[2]
# Options away from their defaults, so a part that dropped one would show.
OPTS = {"leaky_slope": 0.2, "elu_alpha": 0.7, "maxout_k": 3}
WIDTH = 6


def _factory_block(name: str, *, arch: str = "mlp", **cfg: object) -> nn.Module:
    options: dict = {**OPTS, **cfg}
    config = ModelConfig(arch=arch, hidden=(WIDTH,), activation=name, **options)
    shape = (2, 4, 4) if arch == "convnet" else (5,)
    return build_model(config, input_shape=shape, num_classes=3).blocks[0]


# -- models.activation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS.names())
@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_activation_is_the_factorys_module(name: str, arch: str) -> None:
    factory = _factory_block(name, arch=arch).act
    mine = models.activation(name, features=WIDTH, **OPTS)  # type: ignore[arg-type]
    assert type(mine) is type(factory) and isinstance(mine, ActivationModule)
    assert (mine.name, mine.gain, mine.pieces) == (factory.name, factory.gain, factory.pieces)
    assert mine.name == name and mine.pieces == (3 if name == "maxout" else 1)
    assert repr(mine) == repr(factory)
    state, factory_state = mine.state_dict(), factory.state_dict()
    assert state.keys() == factory_state.keys()  # prelu: the same learned slopes, by name
    assert all(torch.equal(state[k], factory_state[k]) for k in state)
    shape = (4, mine.pieces * WIDTH) if arch == "mlp" else (4, mine.pieces * WIDTH, 3, 3)
    z = torch.randn(*shape)  # what the affine layer before it puts out
    torch.testing.assert_close(mine(z), factory(z), rtol=0, atol=0)
    assert mine(z).shape == (4, WIDTH, *shape[2:])


def test_every_activation_module_carries_its_registry_name() -> None:
    for name in ACTIVATIONS.names():
        assert ACTIVATIONS.get(name)(ModelConfig()).module(2).name == name


def test_a_maxout_made_directly_is_marked_as_the_factory_marks_it() -> None:
    direct, built = Maxout(3), models.activation("maxout", maxout_k=3)
    assert (direct.name, direct.gain, direct.pieces) == (built.name, built.gain, built.pieces)


def test_activation_options_default_as_in_model_config() -> None:
    default = ModelConfig()
    assert models.activation("leaky_relu").negative_slope == default.leaky_slope
    assert models.activation("elu").alpha == default.elu_alpha
    assert models.activation("maxout").pieces == default.maxout_k
    # the options an activation does not use are accepted and ignored: a builder passes them
    # whatever activation its config names
    assert type(models.activation("relu", leaky_slope=0.3, maxout_k=4)) is type(
        models.activation("relu"))


def test_prelu_without_features_learns_one_shared_slope() -> None:
    shared = models.activation("prelu", leaky_slope=0.25)
    assert [p.shape for p in shared.parameters()] == [torch.Size([1])]
    z = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(shared(z), torch.where(z > 0, z, 0.25 * z))
    assert models.activation("prelu", features=4).weight.shape == (4,)


def test_maxout_after_a_layer_k_times_wider() -> None:
    act = models.activation("maxout", maxout_k=2)
    linear = nn.Linear(5, act.pieces * 7)
    assert act(linear(torch.randn(3, 5))).shape == (3, 7)


def test_unknown_activation_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        models.activation("swish")
    assert info.value.known == ACTIVATIONS.names()
    assert "known: sigmoid, tanh, relu, leaky_relu, prelu, elu, maxout" in str(info.value)


def test_bad_activation_options_are_reported_together() -> None:
    with pytest.raises(ModelError) as info:
        models.activation("leaky_relu", leaky_slope=1.5, maxout_k=1)
    text = str(info.value)
    assert text.startswith("models.activation: ")
    assert "leaky_slope: out of range (given 1.5; allowed: a number in [0, 1))" in text
    assert "maxout_k" in text and "given 1" in text
    with pytest.raises(ModelError, match="features must be an integer >= 1"):
        models.activation("prelu", features=0)
    with pytest.raises(TypeError):
        models.activation("relu", slope=0.1)  # type: ignore[call-arg]


# -- models.initialize ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", INITIALIZERS.names())
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "tanh", "maxout"])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "bn"])
def test_initialize_draws_the_factorys_initial_weights(scheme: str, name: str,
                                                       batchnorm: bool) -> None:
    cfg = ModelConfig(hidden=(WIDTH,), activation=name, init=scheme, batchnorm=batchnorm,
                      init_std=0.05, init_constant=0.3, **OPTS)  # type: ignore[arg-type]
    torch.manual_seed(3)
    factory = build_model(cfg, input_shape=(5,), num_classes=3)

    torch.manual_seed(3)  # the same draws: build each layer, then initialize it
    act = models.activation(name, features=WIDTH, **OPTS)  # type: ignore[arg-type]
    hidden = nn.Linear(5, act.pieces * WIDTH, bias=not batchnorm)
    models.initialize(hidden, scheme, activation=act, init_std=0.05, init_constant=0.3)
    classifier = models.initialize(nn.Linear(WIDTH, 3), scheme, activation=None,
                                   init_std=0.05, init_constant=0.3)

    block = factory.blocks[0]
    assert isinstance(block.linear, nn.Linear)
    assert torch.equal(hidden.weight, block.linear.weight)
    assert (hidden.bias is None) == (block.linear.bias is None) == batchnorm
    assert torch.equal(classifier.weight, factory.classifier.weight)
    assert torch.equal(classifier.bias, factory.classifier.bias)
    assert not classifier.bias.any()  # biases zero, as the factory leaves them


@pytest.mark.parametrize("scheme", ["he", "he_uniform", "xavier"])
def test_initialize_a_conv_as_the_convnet_does(scheme: str) -> None:
    cfg = ModelConfig(arch="convnet", hidden=(WIDTH,), activation="elu", init=scheme,
                      elu_alpha=0.7)
    torch.manual_seed(5)
    factory = build_model(cfg, input_shape=(2, 4, 4), num_classes=3)
    torch.manual_seed(5)
    conv = nn.Conv2d(2, WIDTH, kernel_size=3, padding=1)
    models.initialize(conv, scheme, activation=models.activation("elu", elu_alpha=0.7))
    assert torch.equal(conv.weight, factory.blocks[0].linear.weight)
    assert conv.bias is not None and not conv.bias.any()


def test_an_activation_name_gives_the_gain_at_default_options() -> None:
    torch.manual_seed(0)
    by_name = models.initialize(nn.Linear(50, 40), "he", activation="leaky_relu")
    torch.manual_seed(0)
    by_module = models.initialize(nn.Linear(50, 40), "he",
                                  activation=models.activation("leaky_relu"))
    assert torch.equal(by_name.weight, by_module.weight)


def test_initialize_reaches_every_linear_and_conv_and_nothing_else() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), models.batchnorm(4, kind="2d"), models.activation("prelu"),
        nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), nn.Conv1d(1, 1, 1),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(7.0)
    models.initialize(net, "constant", activation="relu", init_constant=0.5)
    conv, bn, prelu, (_, linear), conv1d = net
    for layer in (conv, linear, conv1d):
        assert (layer.weight == 0.5).all() and (layer.bias == 0).all()
    assert (bn.weight == 7).all() and (bn.bias == 7).all()  # batchnorm keeps its values
    assert (prelu.weight == 7).all()


def test_initialize_refuses_what_it_cannot_do() -> None:
    with pytest.raises(UnknownNameError) as info:
        models.initialize(nn.Linear(2, 2), "orthogonal", activation="relu")
    assert info.value.known == INITIALIZERS.names()
    with pytest.raises(UnknownNameError, match="known: sigmoid"):
        models.initialize(nn.Linear(2, 2), "he", activation="swish")
    with pytest.raises(ModelError, match="a module from models.activation, or None; got ReLU"):
        models.initialize(nn.Linear(2, 2), "he", activation=nn.ReLU())  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="no layer to initialize"):
        models.initialize(nn.ReLU(), "he", activation="relu")
    with pytest.raises(ModelError, match="init_std: out of range"):
        models.initialize(nn.Linear(2, 2), "normal", activation=None, init_std=0.0)
    with pytest.raises(TypeError):
        models.initialize(nn.Linear(2, 2), "he")  # type: ignore[call-arg]  # which gain?


# -- models.batchnorm -------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "arch"), [("1d", "mlp"), ("2d", "convnet")])
def test_batchnorm_is_the_factorys_layer(kind: str, arch: str) -> None:
    factory = _factory_block("maxout", arch=arch, batchnorm=True).norm
    mine = models.batchnorm(3 * WIDTH, kind=kind)  # before maxout: one channel per piece
    assert type(mine) is type(factory) and repr(mine) == repr(factory)
    state = mine.state_dict()
    assert all(torch.equal(state[k], v) for k, v in factory.state_dict().items())


def test_batchnorm_normalizes_features_or_maps() -> None:
    flat = models.batchnorm(4, kind="1d")(torch.randn(16, 4) * 3 + 2)  # (N, C)
    torch.testing.assert_close(flat.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    maps = models.batchnorm(4, kind="2d")(torch.randn(8, 4, 5, 5) * 3 + 2)  # (N, C, H, W)
    torch.testing.assert_close(maps.mean((0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)


def test_batchnorm_refuses_an_unknown_kind_or_a_bad_width() -> None:
    with pytest.raises(UnknownNameError) as info:
        models.batchnorm(4, kind="3d")
    assert info.value.known == BATCHNORMS.names() == ["1d", "2d"]
    assert "unknown batchnorm kind '3d'; known: 1d, 2d" in str(info.value)
    for bad in (0, 2.0, True):
        with pytest.raises(ModelError, match="features must be an integer >= 1"):
            models.batchnorm(bad, kind="1d")  # type: ignore[arg-type]


# -- the package surface ----------------------------------------------------------------------


def test_the_parts_stay_lazy_and_the_names_stay_functions() -> None:
    # models.batchnorm is the function even once its module is imported (the module is
    # models.normalization: a submodule named batchnorm would replace the attribute).
    code = (
        "import sys, models; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "import models.normalization, models.init, models.activations; "
        "assert callable(models.batchnorm) and callable(models.activation); "
        "assert callable(models.initialize); "
        "assert models.ActivationModule is models.activations.ActivationModule"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
