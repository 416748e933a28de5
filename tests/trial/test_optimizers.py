"""Every optimizer name of ``OPTIMIZERS`` builds, one trial's and a pack's alike; any other name
is refused with the known ones listed; one trial's steps as torch.optim's, without importing
torch's compiler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps_as_torch_optim_does_bit_for_bit(name):
    """hpo's optimizers call torch's update unwrapped (``hpo.trial.optimizers``): five steps with
    weight decay on the weights land on exactly the weights torch.optim's own class gives."""
    cfg = TrainConfig(optimizer=name, lr=0.1, momentum=0.8, weight_decay=0.01)
    torch_class = {"adam": torch.optim.Adam}.get(name, torch.optim.SGD)
    kwargs = ({"betas": (cfg.momentum, 0.999)} if name == "adam" else
              {"momentum": 0.0 if name == "sgd" else cfg.momentum, "nesterov": name == "nesterov"})
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    landed = []
    for build in (lambda m: build_optimizer(m, cfg),
                  lambda m: torch_class([{"params": [m[0].weight, m[2].weight],
                                          "weight_decay": cfg.weight_decay},
                                         {"params": [m[0].bias, m[2].bias],
                                          "weight_decay": 0.0}], lr=cfg.lr, **kwargs)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        opt = build(model)
        assert isinstance(opt, torch_class)  # schedulers and hooks take it as torch's own
        for _ in range(5):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        landed.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*landed))


def test_a_trial_trains_without_importing_torch_compile():
    """torch.optim's wrappers would import ``torch._dynamo`` (1.4 s of CPU) in every new trial
    worker and in the driver's sanity checks; a whole trial, in a fresh process, does not."""
    script = (
        "import sys\n"
        "from hpo.config.spec import parse_spec\n"
        "from hpo.data.dataset import load_dataset\n"
        "from hpo.trial.train import train_trial\n"
        "spec = parse_spec({'data': {'source': 'digits'}, 'train': {'epochs': 2},\n"
        "                   'model': {'hidden': [16]}})\n"
        "for name in ('momentum', 'nesterov', 'adam'):\n"
        "    params = {**spec.resolve({}), 'optimizer': name}\n"
        "    outcome = train_trial(params, load_dataset(spec.data, seed=0), seed=0)\n"
        "    assert len(outcome.history) == 2, outcome\n"
        "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
