"""Each initializer draws what the notes write, with fan-in and gain right for the layer."""

from __future__ import annotations

import math

import pytest
from torch import nn

from models import INITIALIZERS, ModelConfig, build_model
from models.activations import Activation
from models.init import fan_in
from models.registry import ACTIVATIONS


def test_fan_in_counts_the_products_one_output_sums() -> None:
    assert fan_in(nn.Linear(30, 7).weight) == 30
    assert fan_in(nn.Conv2d(4, 8, kernel_size=3).weight) == 4 * 3 * 3


def _std_and_bound(
    init: str, *, activation: str = "relu", layer: nn.Module | None = None
) -> tuple[float, float]:
    """The empirical std and max |w| of a large weight filled by ``init``."""
    layer = layer if layer is not None else nn.Linear(400, 1000)
    cfg = ModelConfig(
        activation=activation, init=init, init_std=0.03, init_constant=0.25, leaky_slope=0.5
    )
    gain = ACTIVATIONS.get(activation)(cfg).gain
    INITIALIZERS.get(init)(layer.weight, cfg=cfg, gain=gain)
    w = layer.weight.detach()
    return w.std().item(), w.abs().max().item()


@pytest.mark.parametrize(
    ("init", "activation", "expected_std"),
    [
        ("normal", "relu", 0.03),  # init_std, "small random numbers"
        ("xavier", "relu", 1 / math.sqrt(400)),  # randn / sqrt(fan_in), no gain
        ("xavier", "tanh", 1 / math.sqrt(400)),  # the notes' Xavier ignores the activation
        ("xavier_uniform", "relu", 1 / math.sqrt(400)),
        ("he", "relu", math.sqrt(2 / 400)),  # randn / sqrt(fan_in / 2)
        ("he_uniform", "relu", math.sqrt(2 / 400)),
        ("he", "leaky_relu", math.sqrt(2 / (1 + 0.5**2) / 400)),  # the slope's gain
        ("he", "prelu", math.sqrt(2 / (1 + 0.5**2) / 400)),
        ("he_uniform", "leaky_relu", math.sqrt(2 / (1 + 0.5**2) / 400)),
    ],
)
def test_random_initializers_draw_the_right_std(
    init: str, activation: str, expected_std: float
) -> None:
    std, bound = _std_and_bound(init, activation=activation)
    assert std == pytest.approx(expected_std, rel=0.02)  # 400k draws: sampling error ~0.1%
    if init.endswith("uniform"):
        assert bound <= math.sqrt(3) * expected_std  # U(-b, b) with b = sqrt(3) * std
        assert bound > 0.99 * math.sqrt(3) * expected_std


def test_he_on_a_conv_counts_the_kernel_in_fan_in() -> None:
    std, _ = _std_and_bound("he", layer=nn.Conv2d(16, 256, kernel_size=3))
    assert std == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.03)


def test_zero_and_constant_fill_every_weight() -> None:
    layer = nn.Linear(5, 4)
    cfg = ModelConfig(init_constant=0.25)
    INITIALIZERS.get("zero")(layer.weight, cfg=cfg, gain=1.0)
    assert (layer.weight == 0).all()
    INITIALIZERS.get("constant")(layer.weight, cfg=cfg, gain=1.0)
    assert (layer.weight == 0.25).all()


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
@pytest.mark.parametrize("init", INITIALIZERS.names())
def test_built_models_zero_biases_and_start_batchnorm_at_identity(arch: str, init: str) -> None:
    shape = (3,) if arch == "mlp" else (2, 4, 4)
    for batchnorm in (False, True):
        cfg = ModelConfig(
            arch=arch, hidden=(4, 4), init=init, init_constant=0.5, batchnorm=batchnorm
        )
        model = build_model(cfg, input_shape=shape, num_classes=2)
        for name, p in model.named_parameters():
            if name.endswith("linear.bias") or name == "classifier.bias":
                assert (p == 0).all(), name
            if name.endswith("norm.weight"):
                assert (p == 1).all(), name
            if name.endswith("norm.bias"):
                assert (p == 0).all(), name


def test_hidden_layers_use_the_activation_gain_and_the_classifier_gain_one() -> None:
    width = 400
    cfg = ModelConfig(hidden=(width, width), activation="leaky_relu", leaky_slope=0.5, init="he")
    model = build_model(cfg, input_shape=(width,), num_classes=width)
    gain = math.sqrt(2 / (1 + 0.5**2))
    for block in model.features:
        assert block.linear.weight.std().item() == pytest.approx(gain / math.sqrt(width), rel=0.02)
    # No activation follows the scores: gain 1.
    assert model.classifier.weight.std().item() == pytest.approx(1 / math.sqrt(width), rel=0.02)


def test_maxout_pieces_share_the_fan_in_of_an_ordinary_layer() -> None:
    cfg = ModelConfig(hidden=(300,), activation="maxout", maxout_k=3, init="he")
    model = build_model(cfg, input_shape=(200,), num_classes=2)
    activation: Activation = ACTIVATIONS.get("maxout")(cfg)
    weight = model.features[0].linear.weight  # (k*H, D) = (900, 200)
    assert weight.shape == (900, 200)
    assert weight.std().item() == pytest.approx(activation.gain / math.sqrt(200), rel=0.02)
