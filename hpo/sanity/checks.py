"""Babysitting the learning process: the notes' sanity checks, before any trial runs.

They run on one configuration from the middle of the space (``middle_config``), with
regularization and dropout off, one function each:

1. ``check_initial_loss``: with regularization off, the initial loss is close to
   ln(number of classes);
2. ``check_regularization``: turning regularization on raises the initial loss;
3. ``check_overfit_tiny``: a tiny training subset is overfit to 100% training accuracy within a
   step budget;
4. ``check_lr_extremes``: a very small learning rate leaves the loss almost unchanged, a very
   large one makes it explode;
5. ``check_learns``: a short run on the training set lifts validation accuracy well above chance.

Each check records what it measured, what it expected, and for a failure the likely cause in the
notes' terms. ``run_sanity_checks`` runs the five in this order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hpo.config.spec import Spec
from hpo.data.dataset import Dataset
from hpo.space.distributions import Categorical, Distribution, Numeric
from hpo.trial.train import (
    build_optimizer,
    build_trial_model,
    l2_penalty,
    tensors,
    train_config,
    train_trial,
)

__all__ = [
    "CheckResult",
    "CheckSetup",
    "check_initial_loss",
    "check_learns",
    "check_lr_extremes",
    "check_overfit_tiny",
    "check_regularization",
    "middle_config",
    "run_sanity_checks",
    "sub_batch",
]

#: Check 1 passes when |loss - ln C| <= this fraction of ln C.
INITIAL_LOSS_TOLERANCE = 0.5
#: Check 3: examples, full-batch steps, and the accuracy that counts as "overfit".
TINY_SUBSET, TINY_STEPS = 20, 300
#: Check 4: steps, "almost unchanged" (relative change), and "explodes" (factor or non-finite).
LR_STEPS, TINY_LR_CHANGE, EXPLODE_FACTOR = 30, 0.02, 3.0
#: Check 5: epochs of the short run; pass when val accuracy >= this multiple of chance.
LEARN_EPOCHS, LEARN_OVER_CHANCE = 3, 2.0


@dataclass
class CheckResult:
    """One check's verdict, as the report and MLflow show it."""

    name: str
    passed: bool
    measured: str
    expected: str
    cause: str = ""  # the likely cause of a failure, in the notes' terms
    values: dict[str, float] = field(default_factory=dict)  # numbers for MLflow


@dataclass(frozen=True)
class CheckSetup:
    """What every check works on: one configuration and the data, seeded."""

    params: dict[str, Any]  # a resolved configuration, regularization and dropout off
    data: Dataset
    seed: int
    x: torch.Tensor  # (N, *input_shape): the training inputs
    y: torch.Tensor  # (N,): their labels

    @classmethod
    def of(cls, params: Mapping[str, Any], data: Dataset, *, seed: int) -> CheckSetup:
        """``params`` with weight decay and dropout turned off, on ``data``'s training split."""
        t = tensors(data)
        return cls({**params, "weight_decay": 0.0, "dropout": 0.0}, data, seed,
                   t["x_train"], t["y_train"])

    def build(self) -> nn.Module:
        """The configuration's model, with the initial weights its trial would have."""
        torch.manual_seed(self.seed)
        return build_trial_model(self.params, self.data)


def middle_config(spec: Spec) -> dict[str, Any]:
    """A configuration from the middle of the space: t-space midpoints, first choices."""
    middle: dict[str, Any] = {}
    for name, dist in spec.distributions().items():
        middle[name] = _middle(dist)
    return spec.resolve(middle)


def _middle(dist: Distribution) -> Any:
    if isinstance(dist, Categorical):
        return dist.choices[0]
    assert isinstance(dist, Numeric)
    value = dist.from_t((dist.t_low + dist.t_high) / 2)
    return int(round(value)) if dist.integer else value


def run_sanity_checks(spec: Spec, data: Dataset, params: Mapping[str, Any] | None = None
                      ) -> list[CheckResult]:
    """The five checks on ``params`` (default: the middle of the space), regularization off."""
    setup = CheckSetup.of(params or middle_config(spec), data, seed=spec.seed)
    return [
        check_initial_loss(setup),
        check_regularization(setup, _regularization_probe(spec)),
        check_overfit_tiny(setup),
        check_lr_extremes(setup),
        check_learns(setup),
    ]


def check_initial_loss(setup: CheckSetup) -> CheckResult:
    """1. Without regularization the first loss is close to ln(classes): the softmax of
    near-zero scores is uniform."""
    ln_c = math.log(setup.data.num_classes)
    loss0 = _loss(setup.build(), setup.x, setup.y)
    ok = abs(loss0 - ln_c) <= INITIAL_LOSS_TOLERANCE * ln_c
    return CheckResult(
        "initial loss ~ ln(classes)", ok, f"{loss0:.3f}",
        f"{ln_c:.3f} +/- {INITIAL_LOSS_TOLERANCE * ln_c:.2f}",
        "" if ok else ("loss far above ln(C): weights initialized too large (bad initialization "
                       "scale) or inputs not preprocessed" if loss0 > ln_c else
                       "loss below ln(C) before training: labels leak into the inputs, or the "
                       "loss is not a softmax cross-entropy"),
        {"sanity.initial_loss": loss0, "sanity.ln_classes": ln_c})


def check_regularization(setup: CheckSetup, weight_decay: float) -> CheckResult:
    """2. Turning on an L2 penalty of ``weight_decay`` raises the initial loss."""
    model = setup.build()
    loss0 = _loss(model, setup.x, setup.y)
    loss_reg = _loss(model, setup.x, setup.y, weight_decay=weight_decay)
    ok = loss_reg > loss0 + 1e-6
    return CheckResult(
        "regularization raises the loss", ok,
        f"{loss0:.3f} -> {loss_reg:.3f} (wd={weight_decay:g})", "higher with regularization",
        "" if ok else "the L2 penalty adds nothing: weights are all zero (zero initialization, "
                      "where every unit is identical) or the penalty is not in the loss",
        {"sanity.initial_loss_regularized": loss_reg})


def check_overfit_tiny(setup: CheckSetup) -> CheckResult:
    """3. Full-batch training on TINY_SUBSET seeded examples reaches 100% training accuracy
    within TINY_STEPS steps."""
    gen = torch.Generator().manual_seed(setup.seed)
    sub = torch.randperm(len(setup.y), generator=gen)[:TINY_SUBSET]
    xs, ys = setup.x[sub], setup.y[sub]
    acc, step = _overfit(setup, xs, ys)
    ok = acc == 1.0
    constant = float(xs.std(0).max()) < 1e-6
    return CheckResult(
        f"overfits {TINY_SUBSET} examples", ok, f"train accuracy {acc:.2f} after {step} steps",
        f"1.00 within {TINY_STEPS} steps",
        "" if ok else ("every input is the same: a broken data pipeline feeds constant input"
                       if constant else "cannot memorize 20 examples: learning rate far off, "
                       "vanishing gradients (bad initialization scale, saturated units), or a "
                       "model with too little capacity"),
        {"sanity.tiny_accuracy": acc, "sanity.tiny_steps": step})


def check_lr_extremes(setup: CheckSetup) -> CheckResult:
    """4. On one fixed batch, 1e-4 times the learning rate barely moves the loss and 1e4 times
    it (at least 100) makes the loss explode."""
    lr_mid = float(setup.params["lr"])
    batch = sub_batch(len(setup.y), setup.seed)
    xb, yb = setup.x[batch], setup.y[batch]
    low = _steps(setup, lr=lr_mid * 1e-4, steps=LR_STEPS, x=xb, y=yb)
    change = abs(low[-1] - low[0]) / max(low[0], 1e-12)
    high = _steps(setup, lr=max(lr_mid * 1e4, 100.0), steps=LR_STEPS, x=xb, y=yb)
    peak = max((v if math.isfinite(v) else math.inf) for v in high)
    exploded = not math.isfinite(peak) or peak > EXPLODE_FACTOR * high[0]
    ok = math.isfinite(change) and change < TINY_LR_CHANGE and exploded
    return CheckResult(
        "tiny lr: loss flat; huge lr: explodes", ok,
        f"tiny: {100 * change:.2f}% change; huge: peak {peak:.3g} vs {high[0]:.3g}",
        f"< {100 * TINY_LR_CHANGE:g}% change; peak > {EXPLODE_FACTOR:g}x or NaN",
        "" if ok else ("the loss is not finite even at a tiny learning rate: NaN or infinite "
                       "values in the inputs (a broken data pipeline)" if not math.isfinite(change)
                       else "a tiny learning rate changes the loss a lot: the loss does not depend "
                       "smoothly on the weights (check the pipeline)" if change >= TINY_LR_CHANGE
                       else "a huge learning rate does not make the loss explode: gradients "
                       "do not reach the weights (frozen or detached parameters)"),
        {"sanity.tiny_lr_change": change, "sanity.huge_lr_peak": min(peak, 1e30)})


def check_learns(setup: CheckSetup) -> CheckResult:
    """5. A LEARN_EPOCHS-epoch trial lifts validation accuracy to LEARN_OVER_CHANCE times chance,
    or halfway from chance to perfect where that is less (two classes: 0.75, not 1.0)."""
    outcome = train_trial({**setup.params, "epochs": LEARN_EPOCHS}, setup.data, seed=setup.seed)
    val = outcome.last.get("val_accuracy", 0.0)
    chance = 1.0 / setup.data.num_classes
    required = min(LEARN_OVER_CHANCE * chance, (1 + chance) / 2)
    ok = val >= required
    return CheckResult(
        "learns beyond chance", ok, f"val accuracy {val:.3f} after {LEARN_EPOCHS} epochs",
        f">= {required:.2f} (chance {chance:.2f})",
        "" if ok else "training does not carry over to validation: labels that do not match "
                      "their inputs (shuffled or misaligned), or a model that does not learn at "
                      "all (see the checks above)",
        {"sanity.short_val_accuracy": val})


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0) -> float:
    with torch.no_grad():
        was = model.training
        model.train()  # the loss the first training step sees
        value = nn.functional.cross_entropy(model(x), y) + l2_penalty(model, weight_decay)
        model.train(was)
    return float(value)


def _overfit(setup: CheckSetup, xs: torch.Tensor, ys: torch.Tensor) -> tuple[float, int]:
    """Full-batch steps on ``xs``, ``ys`` until training accuracy (checked every 10 steps) is
    1.0, the loss is not finite, or TINY_STEPS: the last accuracy measured and the steps run."""
    model = setup.build()
    opt = build_optimizer(model, train_config({**setup.params, "weight_decay": 0.0}))
    acc, step = 0.0, 0
    for step in range(1, TINY_STEPS + 1):
        model.train()
        loss = nn.functional.cross_entropy(model(xs), ys)
        if not math.isfinite(float(loss.detach())):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            model.eval()
            with torch.no_grad():
                acc = float((model(xs).argmax(1) == ys).float().mean())
            if acc == 1.0:
                break
    return acc, step


def _steps(setup: CheckSetup, *, lr: float, steps: int, x: torch.Tensor, y: torch.Tensor
           ) -> list[float]:
    """Losses of ``steps`` optimizer steps at learning rate ``lr`` on one fixed batch (no
    regularization): with a fixed batch a change in loss comes from the weights alone."""
    model = setup.build()
    opt = build_optimizer(model, train_config({**setup.params, "lr": lr, "weight_decay": 0.0}))
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return losses


def sub_batch(n: int, seed: int, size: int = 256) -> torch.Tensor:
    """A fixed, seeded batch of training indices."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]


def _regularization_probe(spec: Spec) -> float:
    """A weight decay clearly "on": the top of the searched range, else the fixed value, else
    1e-2."""
    wd = spec.train["weight_decay"]
    if isinstance(wd, Numeric):
        return float(wd.high)
    return float(wd) if wd else 1e-2
