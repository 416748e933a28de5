"""What a trial minimizes and reports, now that the optimizer applies the L2 term: the same
steps as the term in the loss, on the same parameters; the first loss with the term; train
accuracy in evaluation mode on the fixed subset; a divergence between two checks still ends the
trial in that epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpo.config.spec import parse_spec
from hpo.data.dataset import load_dataset
from hpo.trial.config import OPTIMIZERS, TrainConfig
from hpo.trial.status import TrialStatus
from hpo.trial.train import (
    DIVERGENCE_CHECK_STEPS,
    TRAIN_EVAL_SIZE,
    build_optimizer,
    build_trial_model,
    evaluate,
    l2_penalty,
    tensors,
    train_trial,
)


@pytest.fixture(scope="module")
def data():
    spec = parse_spec({"data": {"source": "digits", "preprocess": ["zero_center", "normalize"]}})
    return load_dataset(spec.data, seed=0)


def params(model=None, **train):
    spec = parse_spec({"model": {"hidden": [32], "activation": "relu", "init": "he",
                                 "batchnorm": True, **(model or {})},
                       "train": {"epochs": 2, "batch_size": 64, "optimizer": "momentum",
                                 "lr": 0.05, "weight_decay": 1e-2, **train}})
    return spec.resolve({})


def _net() -> nn.Module:
    """Weights, biases and BN scales. No bias before the batchnorm, as the factory builds it:
    its gradient is rounding noise, which Adam would scale up to full steps."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Linear(8, 3))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_optimizers_weight_decay_steps_as_the_l2_term_in_the_loss_would(name):
    """Three steps with the optimizer's decay land where three steps on data loss + l2_penalty
    land: the same gradient on the same parameters (weights, not biases or BN scales)."""
    wd, x, y = 0.05, torch.randn(16, 5), torch.randint(0, 3, (16,))
    cfg = TrainConfig(optimizer=name, lr=0.1, momentum=0.8, weight_decay=wd)
    by_optimizer, in_loss = _net(), _net()
    opt = build_optimizer(by_optimizer, cfg)
    opt_plain = build_optimizer(in_loss, TrainConfig(optimizer=name, lr=0.1, momentum=0.8,
                                                     weight_decay=0.0))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(by_optimizer(x), y).backward()
        opt.step()
        opt_plain.zero_grad()
        (nn.functional.cross_entropy(in_loss(x), y) + l2_penalty(in_loss, wd)).backward()
        opt_plain.step()
    for (k, a), b in zip(by_optimizer.named_parameters(), in_loss.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_weight_decay_covers_the_parameters_the_l2_term_covers():
    model = _net()
    opt = build_optimizer(model, TrainConfig(weight_decay=1e-3))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.dim() > 1}


def test_the_initial_loss_is_the_first_batchs_loss_with_the_l2_term(data):
    p = params(epochs=1)
    outcome = train_trial(p, data, seed=3)
    torch.manual_seed(3)
    model = build_trial_model(p, data)
    t = tensors(data)
    first = torch.randperm(len(t["y_train"]), generator=torch.Generator().manual_seed(3))[:64]
    model.train()
    with torch.no_grad():
        data_loss = nn.functional.cross_entropy(model(t["x_train"][first]), t["y_train"][first])
        expected = float(data_loss + l2_penalty(model, p["weight_decay"]))
    assert outcome.initial_loss == expected
    assert expected > float(data_loss)  # the term is in it


def test_train_accuracy_is_the_evaluation_mode_accuracy_on_the_fixed_subset(data):
    outcome = train_trial(params({"dropout": 0.3}), data, seed=0, keep_model=True)
    t = tensors(data)
    _, acc = evaluate(outcome.model, t["x_train"][:TRAIN_EVAL_SIZE],
                      t["y_train"][:TRAIN_EVAL_SIZE])
    assert outcome.last["train_accuracy"] == acc
    assert outcome.last["gap"] == acc - outcome.last["val_accuracy"]


def test_a_loss_that_explodes_between_two_checks_ends_the_trial_in_that_epoch(data):
    """lr 1e4: the loss explodes within the first steps, before the first check."""
    outcome = train_trial(params(lr=1e4, optimizer="sgd", epochs=4), data, seed=0)
    assert DIVERGENCE_CHECK_STEPS > 1
    assert outcome.status is TrialStatus.DIVERGED
    assert len(outcome.history) == 1 and outcome.last["diverged"] == 1.0
    assert outcome.last["val_accuracy"] == 0.0


def test_a_trial_is_deterministic_on_the_cpu(data):
    torch.set_num_threads(1)
    a = train_trial(params(), data, seed=5)
    b = train_trial(params(), data, seed=5)
    assert a.history == b.history and a.initial_loss == b.initial_loss
