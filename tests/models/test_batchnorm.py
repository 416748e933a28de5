"""Batchnorm: placed before the activation, running statistics at eval, recomputed statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import ModelConfig, apply_finetune, build_model, recompute_batchnorm_stats
from models._network import Network
from models.errors import ModelError

SHAPES = {"mlp": (6,), "convnet": (2, 8, 8)}


def _model(arch: str = "mlp", **overrides: object) -> Network:
    cfg = ModelConfig(arch=arch, hidden=(5, 4), batchnorm=True, **overrides)  # type: ignore[arg-type]
    return build_model(cfg, input_shape=SHAPES[arch], num_classes=3)


def _train(model: Network, x: Tensor, steps: int = 20) -> None:
    y = torch.arange(x.shape[0]) % 3
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x * 2 + 1), y).backward()  # shifted data: stats move off (0, 1)
        optimizer.step()


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_batchnorm_sits_between_the_affine_layer_and_the_activation(arch: str) -> None:
    model = _model(arch)
    order: list[str] = []
    for block in model.features:
        for part in ("linear", "norm", "act"):
            getattr(block, part).register_forward_hook(
                lambda m, i, o, part=part: order.append(part)
            )
    model(torch.randn(4, *SHAPES[arch]))
    assert order == ["linear", "norm", "act"] * 2
    kinds = {"mlp": nn.BatchNorm1d, "convnet": nn.BatchNorm2d}
    for block in model.features:
        assert isinstance(block.norm, kinds[arch])
        assert block.linear.bias is None  # batchnorm's beta is the bias


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_eval_uses_running_statistics(arch: str) -> None:
    model = _model(arch)
    x = torch.randn(32, *SHAPES[arch])
    _train(model, x)
    norms = [block.norm for block in model.features]
    assert not torch.allclose(norms[0].running_mean, torch.zeros_like(norms[0].running_mean))
    # Train mode normalizes by the batch: an input's output depends on its batch-mates.
    with torch.no_grad():
        alone, in_batch = model(x[:2]), model(x)[:2]
    assert not torch.allclose(alone, in_batch, atol=1e-4)
    # Eval mode uses the running statistics: deterministic per input, and the stats do not move.
    model.eval()
    stats = [n.running_mean.clone() for n in norms]
    with torch.no_grad():
        alone, in_batch = model(x[:2]), model(x)[:2]
    torch.testing.assert_close(alone, in_batch)
    for n, s in zip(norms, stats, strict=True):
        assert torch.equal(n.running_mean, s)


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
@pytest.mark.parametrize("batch_size", [64, 30], ids=["even", "uneven"])
def test_recompute_sets_population_statistics_of_the_training_set(
    arch: str, batch_size: int
) -> None:
    model = _model(arch)
    x = torch.randn(64, *SHAPES[arch]) * 2 + 1  # (N, ...)
    _train(model, x)
    recompute_batchnorm_stats(model, x, batch_size=batch_size)
    assert not model.training
    # The first batchnorm's input does not depend on batching: its population statistics are
    # exactly those of the first affine layer's output over all of x, whatever the batch size.
    first = model.features[0]
    with torch.no_grad():
        z = first.linear(x).double()  # (N, C) or (N, C, H, W)
    dims = [d for d in range(z.dim()) if d != 1]
    torch.testing.assert_close(first.norm.running_mean, z.mean(dims).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first.norm.running_var, z.var(dims).float(), rtol=1e-5, atol=1e-5)
    # In eval mode, that batchnorm's output over the training set is now standardized.
    with torch.no_grad():
        out = first.norm(first.linear(x))
        gamma, beta = first.norm.weight, first.norm.bias
        standardized = (out - beta.view(-1, *[1] * (out.dim() - 2))) / gamma.view(
            -1, *[1] * (out.dim() - 2)
        )
    assert standardized.mean(dims).abs().max().item() < 1e-4
    assert (standardized.var(dims) - 1).abs().max().item() < 1e-3


def test_recompute_ignores_dropout() -> None:
    # The statistics are for the test-time network, where dropout is off: the second
    # batchnorm's statistics must not depend on the dropout rate.
    x = torch.randn(64, 6)
    stats = []
    for dropout in (0.0, 0.5):
        torch.manual_seed(1)
        model = _model(dropout=dropout)
        recompute_batchnorm_stats(model, x, batch_size=64)
        stats.append(model.features[1].norm.running_var.clone())
    torch.testing.assert_close(stats[0], stats[1])


def test_recompute_leaves_frozen_blocks_alone() -> None:
    model = _model()
    x = torch.randn(64, 6)
    _train(model, x)
    apply_finetune(model, 2)  # block 0 frozen; block 1 and the classifier train
    frozen, trained = model.features[0].norm, model.features[1].norm
    kept = frozen.running_mean.clone(), frozen.running_var.clone()
    before = trained.running_mean.clone()
    recompute_batchnorm_stats(model, x * 3)
    assert torch.equal(frozen.running_mean, kept[0]) and torch.equal(frozen.running_var, kept[1])
    assert not torch.allclose(trained.running_mean, before)


def test_recompute_rejects_too_little_data() -> None:
    with pytest.raises(ModelError, match="needs >= 2 inputs"):
        recompute_batchnorm_stats(_model(), torch.randn(1, 6))


def test_recompute_never_makes_a_batch_of_one() -> None:
    # 3 inputs in batches of at most 2 would leave a lone input, which batchnorm1d rejects.
    model = _model()
    recompute_batchnorm_stats(model, torch.randn(3, 6), batch_size=2)
    assert not model.training
