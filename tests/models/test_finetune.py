"""Checkpoints and finetuning: a fixed feature extractor stays fixed; the chosen layers train."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from models import ModelConfig, apply_finetune, build_model, load_checkpoint, save_checkpoint
from models._network import Network
from models.errors import ModelError

SHAPES = {"mlp": (6,), "convnet": (2, 8, 8)}


def _config(arch: str, **overrides: object) -> ModelConfig:
    cfg = ModelConfig(arch=arch, hidden=(5, 4), activation="prelu", batchnorm=True, dropout=0.2)
    return dataclasses.replace(cfg, **overrides)  # type: ignore[arg-type]


def _split(arch: str, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, *SHAPES[arch], generator=g) + seed  # two splits, two distributions
    return x, torch.randint(0, 3, (48,), generator=g)


def _train(model: Network, x: Tensor, y: Tensor, steps: int = 10) -> None:
    # Every parameter handed to the optimizer, with momentum and weight decay: frozen ones must
    # stay put because they get no gradient, not because the optimizer was told to skip them.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _pretrained(arch: str, path: Path) -> tuple[ModelConfig, dict[str, Tensor]]:
    cfg = _config(arch)
    model = build_model(cfg, input_shape=SHAPES[arch], num_classes=3)
    _train(model, *_split(arch, 0))
    save_checkpoint(model, path, config=cfg, input_shape=SHAPES[arch], num_classes=3)
    return cfg, {k: v.clone() for k, v in model.state_dict().items()}


def _changed(model: Network, saved: dict[str, Tensor]) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, saved[k])}


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_fixed_feature_extractor_changes_only_the_classifier(arch: str, tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    cfg, saved = _pretrained(arch, path)
    model = build_model(
        dataclasses.replace(cfg, checkpoint=str(path), finetune="classifier"),
        input_shape=SHAPES[arch],
        num_classes=3,
    )
    assert _changed(model, saved) == set()  # loaded: weights and running statistics
    _train(model, *_split(arch, 1))
    # Parameters and batchnorm buffers of the features are untouched; the classifier moved.
    assert _changed(model, saved) == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_last_n_layers_train_and_the_rest_stay(arch: str, tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    cfg, saved = _pretrained(arch, path)
    model, _ = load_checkpoint(path)
    names = apply_finetune(model, 2)  # the last block and the classifier
    assert names == [
        n for n, _ in model.named_parameters() if n.startswith(("features.1.", "classifier."))
    ]
    _train(model, *_split(arch, 1))
    changed = _changed(model, saved)
    assert not any(k.startswith("features.0.") for k in changed)
    assert {
        "features.1.linear.weight",
        "features.1.norm.running_mean",
        "classifier.weight",
    } <= changed


def test_all_trains_everything(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    cfg, saved = _pretrained("mlp", path)
    model = build_model(
        dataclasses.replace(cfg, checkpoint=str(path)), input_shape=(6,), num_classes=3
    )
    assert all(p.requires_grad for p in model.parameters())
    _train(model, *_split("mlp", 1))
    assert _changed(model, saved) == set(saved)  # every parameter and batchnorm buffer


def test_frozen_blocks_stay_in_eval_mode() -> None:
    model = build_model(_config("mlp"), input_shape=(6,), num_classes=3)
    apply_finetune(model, "classifier")
    model.train()
    assert model.training and model.classifier.training
    assert not any(m.training for block in model.features for m in block.modules())
    apply_finetune(model, "all")
    assert all(m.training for m in model.modules())


def test_modes_count_layers_from_the_end() -> None:
    model = build_model(_config("mlp", hidden=(5, 4, 3)), input_shape=(6,), num_classes=3)
    prefixes = {
        "classifier": ("classifier.",),
        1: ("classifier.",),
        3: ("features.1.", "features.2.", "classifier."),
        4: ("features.", "classifier."),
        "all": ("features.", "classifier."),
    }
    for mode, expected in prefixes.items():
        names = apply_finetune(model, mode)
        assert names == [n for n, _ in model.named_parameters() if n.startswith(expected)], mode


@pytest.mark.parametrize("mode", [0, 5, -1, True, "head", 1.5])
def test_bad_modes_are_input_errors(mode: object) -> None:
    model = build_model(_config("mlp", hidden=(5, 4, 3)), input_shape=(6,), num_classes=3)
    with pytest.raises(ModelError, match="finetune"):
        apply_finetune(model, mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_checkpoint_round_trip(arch: str, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "model.pt"  # parent folders are made
    cfg, saved = _pretrained(arch, path)
    model, meta = load_checkpoint(path)
    assert _changed(model, saved) == set()
    assert (meta.config, meta.input_shape, meta.num_classes, meta.path) == (
        cfg,
        SHAPES[arch],
        3,
        str(path),
    )
    assert all(p.requires_grad for p in model.parameters())


def test_new_label_set_gets_a_fresh_classifier(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    cfg, saved = _pretrained("convnet", path)
    model = build_model(
        dataclasses.replace(cfg, checkpoint=str(path), finetune="classifier"),
        input_shape=(2, 16, 16),  # other image size: the averaging head makes it fit
        num_classes=5,
    )
    assert model.classifier.out_features == 5
    assert (
        _changed(
            model,
            {k: v for k, v in saved.items() if k.startswith("features.")}
            | {k: v for k, v in model.state_dict().items() if k.startswith("classifier.")},
        )
        == set()
    )


def test_another_architecture_is_an_input_error_naming_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    cfg, _ = _pretrained("mlp", path)
    for change in ({"hidden": (5, 3)}, {"activation": "relu"}, {"batchnorm": False}):
        with pytest.raises(ModelError, match=str(path)):
            build_model(
                dataclasses.replace(cfg, checkpoint=str(path), **change),
                input_shape=(6,),
                num_classes=3,
            )
    with pytest.raises(ModelError, match=r"does not fit.*features\.0\.linear\.weight"):
        build_model(dataclasses.replace(cfg, checkpoint=str(path)), input_shape=(7,), num_classes=3)


def test_missing_or_foreign_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="garbage.pt"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(ModelError, match="not a model saved by"):
        load_checkpoint(plain)
