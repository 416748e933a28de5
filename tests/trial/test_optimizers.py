"""Every optimizer name of ``OPTIMIZERS`` builds, one trial's and a pack's alike; any other name
is refused with the known ones listed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpo.errors import UnknownNameError
from hpo.trial.config import OPTIMIZERS, TrainConfig
from hpo.trial.pack import _PACKED_UPDATES, _PackedOptimizer
from hpo.trial.train import _OPTIMIZER_BUILDERS, build_optimizer


def test_one_trial_and_a_pack_know_exactly_the_configured_optimizers():
    assert set(_OPTIMIZER_BUILDERS) == set(OPTIMIZERS)
    assert set(_PACKED_UPDATES) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps_a_member_as_its_own_trial_does(name):
    """One packed member, stepped three times, lands on the weights torch.optim gives."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    cfg = TrainConfig(optimizer=name, lr=0.1, momentum=0.8)
    opt = build_optimizer(layer, cfg)
    packed = {k: v.detach().clone()[None] for k, v in layer.named_parameters()}  # (1, ...)
    popt = _PackedOptimizer(name, torch.tensor([cfg.lr]), torch.tensor([cfg.momentum]))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(layer(x), y).backward()
        grads = [p.grad[None] for p in layer.parameters()]
        opt.step()
        popt.step(packed, grads, torch.tensor([True]))
    for k, v in layer.named_parameters():
        torch.testing.assert_close(packed[k][0], v.detach(), rtol=1e-6, atol=1e-7)


def test_an_unknown_optimizer_is_refused_with_the_known_ones_listed():
    cfg = TrainConfig()
    object.__setattr__(cfg, "optimizer", "rmsprop")  # past any field rule the config checks
    with pytest.raises(UnknownNameError, match="unknown optimizer 'rmsprop'; known: "
                       + ", ".join(OPTIMIZERS)):
        build_optimizer(nn.Linear(2, 2), cfg)
    with pytest.raises(UnknownNameError, match="known: " + ", ".join(OPTIMIZERS)):
        _PackedOptimizer("rmsprop", torch.tensor([0.1]), torch.tensor([0.9]))
