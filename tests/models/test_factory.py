"""build_model: the structure other code relies on, its input checks, and the lazy package."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import models
from models import (
    ACTIVATIONS,
    ARCHITECTURES,
    INITIALIZERS,
    ModelConfig,
    build_model,
    config_problems,
)
from models.errors import ConfigError, ModelError, UnknownNameError
from models.fields import OneOf, field_rule
from models.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (7,)), ("convnet", (3, 8, 8))])
@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_structure(arch: str, shape: tuple[int, ...], batchnorm: bool, dropout: float) -> None:
    cfg = ModelConfig(arch=arch, hidden=(5, 4, 3), batchnorm=batchnorm, dropout=dropout)
    model = build_model(cfg, input_shape=shape, num_classes=6)
    assert isinstance(model.features, nn.Sequential) and len(model.features) == 3
    assert model.blocks == list(model.features)
    assert isinstance(model.classifier, nn.Linear)
    assert (model.classifier.in_features, model.classifier.out_features) == (3, 6)
    linear = nn.Linear if arch == "mlp" else nn.Conv2d
    norm = {"mlp": nn.BatchNorm1d, "convnet": nn.BatchNorm2d}[arch] if batchnorm else nn.Identity
    for block, width in zip(model.features, (5, 4, 3), strict=True):
        assert isinstance(block.linear, linear)
        assert isinstance(block.norm, norm)
        assert isinstance(block.act, nn.ReLU)
        assert isinstance(block.drop, nn.Dropout if dropout else nn.Identity)
        out = block.linear.out_features if arch == "mlp" else block.linear.out_channels
        assert out == width
    if arch == "convnet":
        assert all(block.linear.kernel_size == (3, 3) for block in model.features)
        assert all(isinstance(block.pool, nn.MaxPool2d) for block in model.features)
    assert model(torch.randn(2, *shape)).shape == (2, 6)
    assert model.training


def test_mlp_flattens_any_input_shape() -> None:
    model = build_model(ModelConfig(hidden=(4,)), input_shape=(1, 3, 5), num_classes=2)
    assert model.features[0].linear.in_features == 15
    assert model(torch.randn(2, 1, 3, 5)).shape == (2, 2)


def test_convnet_averages_space_so_any_large_enough_image_fits() -> None:
    model = build_model(
        ModelConfig(arch="convnet", hidden=(4, 4)), input_shape=(1, 8, 8), num_classes=2
    )
    assert model(torch.randn(2, 1, 8, 8)).shape == model(torch.randn(2, 1, 13, 20)).shape == (2, 2)


def test_convnet_conv_block_halves_the_image() -> None:
    model = build_model(
        ModelConfig(arch="convnet", hidden=(4, 5)), input_shape=(1, 8, 12), num_classes=2
    )
    with torch.no_grad():
        h = model.features(torch.randn(2, 1, 8, 12))
    assert h.shape == (2, 5, 2, 3)  # (N, C_last, H/4, W/4)


@pytest.mark.parametrize("shape", [(784,), (28, 28), (1, 1, 28, 28)])
def test_convnet_needs_a_channel_dimension(shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelError, match=r"input_shape \(C, H, W\)"):
        build_model(ModelConfig(arch="convnet"), input_shape=shape, num_classes=10)


def test_convnet_rejects_images_too_small_for_its_blocks() -> None:
    with pytest.raises(ModelError, match="at least 8x8"):
        build_model(
            ModelConfig(arch="convnet", hidden=(4, 4, 4)), input_shape=(1, 8, 4), num_classes=2
        )


@pytest.mark.parametrize(
    ("field", "registry"),
    [("arch", ARCHITECTURES), ("activation", ACTIVATIONS), ("init", INITIALIZERS)],
)
def test_unknown_names_list_the_known_ones(field: str, registry: Registry) -> None:
    with pytest.raises(UnknownNameError) as caught:
        build_model(ModelConfig(**{field: "swish"}), input_shape=(3,), num_classes=2)  # type: ignore[arg-type]
    assert isinstance(caught.value, ModelError)
    for name in registry.names():
        assert name in str(caught.value)


def test_bad_values_are_reported_all_at_once() -> None:
    cfg = ModelConfig(
        hidden=(4, 0),
        leaky_slope=-0.1,
        elu_alpha=0.0,
        maxout_k=1,
        init_std=0.0,
        dropout=1.0,
        finetune="head",
    )
    with pytest.raises(ConfigError) as caught:
        build_model(cfg, input_shape=(3,), num_classes=2)
    paths = [p.path for p in caught.value.problems]
    assert paths == [
        f"model.{f}"
        for f in (
            "hidden",
            "leaky_slope",
            "elu_alpha",
            "maxout_k",
            "init_std",
            "dropout",
            "finetune",
        )
    ]


def test_config_problems_include_unknown_names_with_the_allowed_ones() -> None:
    problems = config_problems(ModelConfig(activation="swish", dropout=2.0))
    assert [p.path for p in problems] == ["model.activation", "model.dropout"]
    assert problems[0].allowed == OneOf(ACTIVATIONS).allowed
    assert all(name in problems[0].allowed for name in ACTIVATIONS.names())
    assert config_problems(ModelConfig()) == []


def test_freezing_without_a_checkpoint_is_an_input_error() -> None:
    with pytest.raises(ConfigError, match="needs model.checkpoint"):
        build_model(ModelConfig(finetune="classifier"), input_shape=(3,), num_classes=2)


@pytest.mark.parametrize(
    ("shape", "classes", "message"),
    [
        ((), 2, "input_shape"),
        ((0, 3), 2, "input_shape"),
        ((3,), 1, "num_classes"),
        ((3,), True, "num_classes"),
    ],
)
def test_bad_shapes_and_class_counts(shape: tuple[int, ...], classes: int, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        build_model(ModelConfig(), input_shape=shape, num_classes=classes)


def test_same_seed_same_model() -> None:
    cfg = ModelConfig(arch="convnet", hidden=(3,), activation="prelu", init="he_uniform")
    states = []
    for _ in range(2):
        torch.manual_seed(7)
        states.append(build_model(cfg, input_shape=(1, 4, 4), num_classes=2).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_registries_resolve_every_name() -> None:
    for registry in (ACTIVATIONS, INITIALIZERS, ARCHITECTURES):
        for name in registry.names():
            assert callable(registry.get(name))


def test_importing_models_does_not_import_torch() -> None:
    code = (
        "import sys, models, models.registry, models.validate; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "models.build_model; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_public_surface() -> None:
    for name in models.__all__:
        assert getattr(models, name) is not None
    with pytest.raises(AttributeError):
        models.no_such_thing  # noqa: B018


def test_importing_models_imports_nothing_of_hpo() -> None:
    # models is the lowest layer: its errors and rules are its own.
    code = (
        "import sys, models, models.errors, models.fields, models.validate; "
        "bad = [m for m in sys.modules if m == 'hpo' or m.startswith('hpo.')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_every_field_carries_a_rule_its_default_follows() -> None:
    for f in dataclasses.fields(ModelConfig):
        field_rule(f).check(getattr(ModelConfig(), f.name))  # raises for a field without one


@pytest.mark.parametrize(
    ("k", "valid"), [(1, False), (2, True), (16, True), (17, False), (2.0, False), (True, False)]
)
def test_maxout_k_is_a_whole_number_from_2_to_16(k: object, valid: bool) -> None:
    # One rule for the validator and the study file (2.0 would reach torch as a float).
    cfg = ModelConfig(activation="maxout", maxout_k=k)  # type: ignore[arg-type]
    problems = config_problems(cfg)
    assert [p.path for p in problems] == ([] if valid else ["model.maxout_k"])


def test_a_list_of_widths_is_as_good_as_a_tuple() -> None:
    assert config_problems(ModelConfig(hidden=[4, 3])) == []  # type: ignore[arg-type]
    assert [p.path for p in config_problems(ModelConfig(hidden=()))] == ["model.hidden"]


def test_finetune_needs_a_checkpoint_only_once_its_own_value_is_valid() -> None:
    assert [p.message for p in config_problems(ModelConfig(finetune=2))] == [
        "finetuning needs model.checkpoint"
    ]
    assert config_problems(ModelConfig(finetune=2, checkpoint="best.pt")) == []
    assert [p.message for p in config_problems(ModelConfig(finetune="head"))] == [
        "unknown value"
    ]
