"""Babysitting: each sanity check both ways, divergence, the gap flag, gap-aware refinement,
and the update/weight ratio and activation statistics against values computed by hand."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from hpo.trial.metrics import activation_metrics
from hpo.trial.status import TrialStatus, classify
from hpo.data.dataset import load_dataset
from hpo.sanity.checks import (
    CheckSetup,
    check_initial_loss,
    check_regularization,
    middle_config,
    run_sanity_checks,
)
from hpo.trial.instruments import UpdateRatio, activation_stats
from hpo.space.refinement import FinishedTrial, RefineSettings, refine
from hpo.config.spec import parse_spec
from hpo.trial.train import train_trial

SPACE = {
    "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
    "model": {"hidden": [64], "activation": "relu", "init": "he", "batchnorm": False},
    "train": {"epochs": 3, "lr": {"loguniform": [1e-3, 1e-1]},
              "weight_decay": {"loguniform": [1e-5, 1e-2]}},
}


@pytest.fixture(scope="module")
def spec():
    return parse_spec(SPACE)


@pytest.fixture(scope="module")
def data(spec):
    return load_dataset(spec.data, seed=spec.seed)


def checks(spec, data, **override):
    results = run_sanity_checks(spec, data, {**middle_config(spec), **override})
    return {r.name: r for r in results}


def test_middle_of_the_space_is_the_log_midpoint(spec):
    middle = middle_config(spec)
    assert middle["lr"] == pytest.approx(1e-2) and middle["weight_decay"] == pytest.approx(3.16e-4,
                                                                                           rel=1e-2)


def test_healthy_setup_passes_every_check(spec, data):
    results = checks(spec, data)
    assert all(r.passed for r in results.values()), {n: r.measured for n, r in results.items()}
    # within the check's tolerance of ln(10); He init without batchnorm sits a bit above it
    assert results["initial loss ~ ln(classes)"].values["sanity.initial_loss"] == pytest.approx(
        math.log(10), rel=0.5)


def test_the_five_checks_run_in_the_notes_order_and_each_stands_alone(spec, data):
    results = run_sanity_checks(spec, data)
    assert [r.name for r in results] == [
        "initial loss ~ ln(classes)", "regularization raises the loss", "overfits 20 examples",
        "tiny lr: loss flat; huge lr: explodes", "learns beyond chance"]
    setup = CheckSetup.of(middle_config(spec), data, seed=spec.seed)
    assert setup.params["weight_decay"] == setup.params["dropout"] == 0.0
    assert check_initial_loss(setup) == results[0]
    assert check_regularization(setup, 1e-2) == results[1]  # the top of the searched range


def test_weights_far_too_large_fail_the_initial_loss_check(spec, data):
    r = checks(spec, data, init="normal", init_std=10.0)["initial loss ~ ln(classes)"]
    assert not r.passed and "initialized too large" in r.cause
    assert r.values["sanity.initial_loss"] > 10


def test_zero_init_fails_the_regularization_and_overfit_checks(spec, data):
    results = checks(spec, data, init="zero")
    reg = results["regularization raises the loss"]
    assert not reg.passed and "zero initialization" in reg.cause
    assert not results["overfits 20 examples"].passed


def test_constant_input_fails_the_overfit_check_with_the_pipeline_named(spec, data):
    constant = dataclasses.replace(data, x_train=np.zeros_like(data.x_train))
    r = checks(spec, constant)["overfits 20 examples"]
    assert not r.passed and "constant input" in r.cause


def test_shuffled_labels_fail_the_learning_check(spec, data):
    rng = np.random.default_rng(0)
    shuffled = dataclasses.replace(data, y_train=rng.permutation(data.y_train))
    results = checks(spec, shuffled)
    r = results["learns beyond chance"]
    assert not r.passed and "shuffled" in r.cause
    assert results["overfits 20 examples"].passed  # a network can memorize random labels


def test_nan_input_fails_the_learning_rate_check(spec, data):
    x = data.x_train.copy()
    x[:, 0, 0, 0] = np.nan
    r = checks(spec, dataclasses.replace(data, x_train=x))["tiny lr: loss flat; huge lr: explodes"]
    assert not r.passed and "NaN" in r.cause


def test_huge_learning_rate_explodes_and_tiny_one_does_not_move(spec, data):
    r = checks(spec, data)["tiny lr: loss flat; huge lr: explodes"]
    assert r.values["sanity.tiny_lr_change"] < 0.02
    assert r.values["sanity.huge_lr_peak"] > 3 * math.log(10)


def test_a_diverging_learning_rate_ends_the_trial_early_and_tagged(spec, data):
    params = {**middle_config(spec), "lr": 1e4, "epochs": 5, "optimizer": "sgd"}
    reports = []
    outcome = train_trial(params, data, seed=0, report=reports.append)
    assert outcome.status is TrialStatus.DIVERGED
    assert len(outcome.history) == 1 < params["epochs"]  # stopped in the first epoch
    assert reports[-1]["diverged"] == 1.0 and reports[-1]["val_accuracy"] == 0.0
    assert classify(reports[-1], gap_threshold=0.1, num_classes=10) == "diverged"


def overfit_setup():
    """A tiny training split, a big network, no regularization: the notes' overfitting."""
    spec = parse_spec({
        "data": {"source": "digits", "val_fraction": 0.97, "preprocess": ["zero_center"]},
        "model": {"hidden": [256, 256], "activation": "relu", "init": "he"},
        "train": {"epochs": 40, "lr": 0.05, "weight_decay": {"loguniform": [1e-6, 1e-4]}},
    })
    return spec, load_dataset(spec.data, seed=0)


def test_gap_flag_and_gap_aware_refinement_push_weight_decay_up():
    spec, data = overfit_setup()
    assert len(data.y_train) < 60
    trials = []
    for wd in (1e-6, 3e-6, 1e-5, 3e-5, 1e-4):
        outcome = train_trial(spec.resolve({"weight_decay": wd}), data, seed=0)
        last = outcome.last
        status = classify(last, gap_threshold=spec.gap.threshold, num_classes=10)
        assert last["train_accuracy"] == 1.0 and last["gap"] > 0.1
        assert status == "overfitting"
        trials.append(FinishedTrial(params={"weight_decay": wd}, metric=last["val_accuracy"],
                                    status=status, overfitting=True))
    old = spec.distributions()["weight_decay"]
    result = refine({"weight_decay": old}, trials, RefineSettings(mode="max"))
    (change,) = result.changes
    assert change.reason == "regularization-up"
    assert change.new.low >= old.low and change.new.high >= 10 * old.high  # the range moves up
    assert change.new.t_low + change.new.t_high > old.t_low + old.t_high


def test_healthy_trial_is_not_flagged(spec, data):
    outcome = train_trial(middle_config(spec), data, seed=0)
    assert classify(outcome.last, gap_threshold=0.1, num_classes=10) == "ok"


def test_update_ratio_matches_a_hand_computed_sgd_step():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    model = nn.Sequential(layer)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    expected = 0.1 * float(layer.weight.grad.norm()) / float(layer.weight.detach().norm())
    ratio = UpdateRatio(model)
    ratio.before()
    opt.step()
    measured = ratio.after()
    assert set(measured) == {"0.weight"}  # weight matrices only, not biases
    assert measured["0.weight"] == pytest.approx(expected, rel=1e-5)


def test_update_ratio_is_reported_per_layer_and_summarized(spec, data):
    outcome = train_trial(middle_config(spec), data, seed=0)
    last = outcome.last
    layers = [k for k in last if k.startswith("update_ratio.")]
    assert sorted(layers) == ["update_ratio.classifier", "update_ratio.layer1"]
    logs = [math.log(last[k]) for k in layers]
    assert last["update_ratio"] == pytest.approx(math.exp(sum(logs) / len(logs)))


class _Tiny(nn.Module):
    """One hidden block with the factory's attribute names and hand-set weights."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        block = nn.Module()
        block.linear = nn.Linear(2, 4, bias=False)
        block.act = act
        self.features = nn.Sequential()
        self.features.append(block)
        self.block = block
        with torch.no_grad():
            # unit 0 follows x0, unit 1 is -x0 - 10 (never positive), units 2-3: +/- x1
            block.linear.weight.copy_(torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]]))
        self.bias = torch.tensor([0.0, -10.0, 0.0, 0.0])

    def forward(self, x):
        return self.block.act(self.block.linear(x) + self.bias)


def test_activation_statistics_match_hand_computed_values():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [-2.0, 0.5], [0.5, -3.0]])
    relu = activation_stats(_Tiny(nn.ReLU()), x, "relu")["layer1"]
    pre = x @ torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]]).T + torch.tensor(
        [0.0, -10.0, 0.0, 0.0])
    a = pre.clamp(min=0)
    assert relu["dead"] == 0.25  # unit 1 is never positive: 1 of 4 units dead
    assert relu["mean"] == pytest.approx(float(a.mean()))
    assert relu["std"] == pytest.approx(float(a.std()))

    tanh = activation_stats(_Tiny(nn.Tanh()), x, "tanh")["layer1"]
    t = torch.tanh(pre)
    assert tanh["saturated"] == pytest.approx(float((t.abs() > 0.99).float().mean()))
    # |pre| > 2.65 saturates: unit 1 on all 4 inputs, and a +/-3 in units 0, 2 and 3: 7 of 16
    assert tanh["saturated"] == 7 / 16


def test_activation_metrics_are_the_statistics_without_the_activations():
    model = _Tiny(nn.ReLU())
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    stats = activation_stats(model, x, "relu")
    assert "values" in stats["layer1"]
    metrics = activation_metrics(stats)
    assert metrics == {f"act.layer1.{k}": v for k, v in stats["layer1"].items() if k != "values"}
    assert set(metrics) == {"act.layer1.mean", "act.layer1.std", "act.layer1.dead"}
    assert not model.block.act._forward_hooks  # the capture leaves no hook behind
