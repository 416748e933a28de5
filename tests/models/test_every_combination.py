"""The shared suite: every activation x initializer x batchnorm, on both architectures.

Parametrized from the registries themselves, so a name added to a registry is tested here
without touching this file. Each case builds a small network, runs forward and backward, and
takes a few optimizer steps on a fixed batch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import ACTIVATIONS, ARCHITECTURES, INITIALIZERS, ModelConfig, build_model

SHAPES = {"mlp": (10,), "convnet": (2, 8, 8)}  # (D,) and (C, H, W), small enough to be quick
NUM_CLASSES = 3
SYMMETRIC = {"zero", "constant"}  # inits that keep every unit of a layer identical


def test_every_architecture_has_a_shape() -> None:
    assert set(SHAPES) == set(ARCHITECTURES.names())


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("init", INITIALIZERS.names())
@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_build_forward_backward_step(
    arch: str, activation: str, init: str, batchnorm: bool
) -> None:
    cfg = ModelConfig(
        arch=arch,
        hidden=(6, 5),
        activation=activation,
        init=init,
        init_constant=0.1,
        batchnorm=batchnorm,
        dropout=0.1,
    )
    model = build_model(cfg, input_shape=SHAPES[arch], num_classes=NUM_CLASSES)
    x = torch.randn(16, *SHAPES[arch])
    y = torch.arange(16) % NUM_CLASSES

    scores = model(x)
    assert scores.shape == (16, NUM_CLASSES)
    assert torch.isfinite(scores).all()

    F.cross_entropy(scores, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"

    model.eval()  # dropout off, batchnorm on running statistics: deterministic
    with torch.no_grad():
        before = F.cross_entropy(model(x), y).item()
        assert torch.equal(model(x), model(x))
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()

    assert torch.isfinite(torch.tensor(after))
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, start[name])}
    assert "classifier.bias" in moved  # cross-entropy always pushes the class scores
    if init not in SYMMETRIC:
        assert moved == set(start), f"parameters that did not move: {set(start) - moved}"
        assert after < before, f"loss did not fall on a fixed batch: {before:.4f} -> {after:.4f}"
