"""One trial: data -> model -> train -> per-epoch metrics. Plain PyTorch, no Ray, no MLflow.

``train_trial`` is what a Ray Tune trial runs (through ``hpo.execution.round``) and what ``hpo train`` runs
in-process. Data are in-memory tensors sliced by a seeded permutation; no DataLoader.

A trial trains on one device (``trial_device``: the GPU when it was given one): the model, the
optimizer state, the data (moved once per trial) and every per-epoch statistic live there, and
only scalars come back to the host. The permutation is drawn on the CPU and its indices moved, so
every device sees the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from hpo.data.dataset import Dataset
from hpo.trial.config import TrainConfig
from models.config import ModelConfig

__all__ = ["TrialOutcome", "diverged_metrics", "trial_threads", "trial_device", "build_optimizer",
           "evaluate", "train_trial", "model_config", "train_config", "l2_penalty", "tensors"]

#: Train accuracy is measured in evaluation mode on this many fixed training examples.
TRAIN_EVAL_SIZE = 1000
#: A loss this many times the first batch's loss counts as diverged ("the loss explodes").
DIVERGENCE_FACTOR = 10.0

_MODEL_FIELDS = {f.name for f in fields(ModelConfig)}
_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def model_config(params: Mapping[str, Any]) -> ModelConfig:
    values = {k: v for k, v in params.items() if k in _MODEL_FIELDS}
    if "hidden" in values:
        values["hidden"] = tuple(int(h) for h in values["hidden"])
    return ModelConfig(**values)


def train_config(params: Mapping[str, Any]) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in params.items() if k in _TRAIN_FIELDS})


@dataclass
class TrialOutcome:
    """What a finished trial leaves: its history and status (the model stays with the caller)."""

    status: str = "ok"  # ok | diverged
    history: list[dict[str, float]] = field(default_factory=list)
    initial_loss: float = math.nan
    model: nn.Module | None = None  # with keep_model: the trained model, on the trial's device

    @property
    def last(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    momentum = 0.0 if cfg.optimizer == "sgd" else cfg.momentum
    return torch.optim.SGD(params, lr=cfg.lr, momentum=momentum,
                           nesterov=cfg.optimizer == "nesterov" and momentum > 0)


def l2_penalty(model: nn.Module, weight_decay: float) -> torch.Tensor:
    """0.5 * wd * sum ||W||^2 over weight matrices and kernels (not biases, not BN scales).

    Regularization lives in the loss, so "turning regularization on raises the loss" is
    observable, as the notes' second sanity check expects.
    """
    zero = torch.zeros((), device=next(model.parameters()).device)
    if weight_decay == 0:
        return zero
    total = sum((p.pow(2).sum() for n, p in model.named_parameters()
                 if p.requires_grad and p.dim() > 1), zero)
    return 0.5 * weight_decay * total


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in evaluation mode (on the device of ``x``)."""
    if len(y) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    losses, hits = [], []
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size])  # (B, classes)
        losses.append(nn.functional.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
        hits.append((logits.argmax(1) == y[i:i + batch_size]).sum())
    model.train(was_training)
    loss_sum = _running_sum(torch.stack(losses).tolist())  # one transfer for all batches
    return loss_sum / len(y), sum(torch.stack(hits).tolist()) / len(y)


def tensors(data: Dataset, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The dataset as tensors on ``device`` (copies: arrays from Ray's object store are
    read-only)."""
    return {k: torch.from_numpy(np.array(getattr(data, k))).to(device) for k in
            ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}


def trial_device(gpu: bool) -> torch.device:
    """Where a trial trains: CUDA when it was given a GPU and this process can use one, else
    the CPU."""
    return torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")


def diverged_metrics(epoch: int) -> dict[str, float]:
    """The last report of a diverged trial: the worst result, so a searcher sees a bad trial
    rather than a missing one."""
    return {"epoch": epoch, "train_loss": math.inf, "train_accuracy": 0.0,
            "val_loss": math.inf, "val_accuracy": 0.0, "gap": 0.0, "diverged": 1.0}


@contextmanager
def trial_threads(cpu: float) -> Iterator[None]:
    """Torch threads as a trial with ``cpu`` CPUs has them (so a retrain in the driver matches
    the trial bit for bit), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpu)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _running_sum(values: list[float]) -> float:
    """Left to right in float64, as ``+=`` in a loop adds (Python 3.12's ``sum`` of floats
    compensates, which would change the last bits)."""
    total = 0.0
    for value in values:
        total += value
    return total


def _geometric_mean(values: Any) -> float:
    logs = [math.log(v) for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def _short(param: str) -> str:
    """``features.0.linear.weight`` -> ``layer1``; ``classifier.weight`` -> ``classifier``."""
    parts = param.split(".")
    if parts[0] == "features" and parts[1].isdigit():
        return f"layer{int(parts[1]) + 1}"
    return parts[0]


def train_trial(
    params: Mapping[str, Any],
    data: Dataset,
    *,
    seed: int,
    report: Callable[[dict[str, float]], None] | None = None,
    keep_model: bool = False,
    device: torch.device | str = "cpu",
) -> TrialOutcome:
    """Train one configuration on ``device``; ``report`` gets each epoch's metrics as they come.

    The model is built on the CPU (the same initial weights on every device) and then moved.

    Divergence (a non-finite loss, or one DIVERGENCE_FACTOR times the first batch's) stops the
    trial early with status "diverged" and a last report whose metrics are the worst possible,
    so a searcher sees a bad result rather than a missing one.
    """
    from hpo.trial.instruments import UpdateRatio, activation_stats
    from models import build_model

    torch.manual_seed(seed)
    mcfg, tcfg = model_config(params), train_config(params)
    model = build_model(mcfg, input_shape=data.input_shape, num_classes=data.num_classes)
    model.to(device)
    optimizer = build_optimizer(model, tcfg)
    t = tensors(data, device)
    x_train, y_train = t["x_train"], t["y_train"]
    x_eval, y_eval = x_train[:TRAIN_EVAL_SIZE], y_train[:TRAIN_EVAL_SIZE]
    generator = torch.Generator().manual_seed(seed)
    ratio = UpdateRatio(model)
    outcome = TrialOutcome()
    n = len(y_train)

    for epoch in range(1, tcfg.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        step_losses, sizes, diverged = [], [], False
        for i in range(0, n, tcfg.batch_size):
            idx = order[i:i + tcfg.batch_size]
            logits = model(x_train[idx])  # (B, classes)
            data_loss = nn.functional.cross_entropy(logits, y_train[idx])
            loss = data_loss + l2_penalty(model, tcfg.weight_decay)
            value = loss.item()  # the step's one host sync: divergence must stop this step
            if math.isnan(outcome.initial_loss):
                outcome.initial_loss = value
            if not math.isfinite(value) or value > DIVERGENCE_FACTOR * max(
                    outcome.initial_loss, 1e-3):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if i + tcfg.batch_size >= n:  # the epoch's last step: measure update/weight
                ratio.before()
            optimizer.step()
            step_losses.append(data_loss.detach())
            sizes.append(len(idx))
        if diverged:
            outcome.status = "diverged"
            metrics = diverged_metrics(epoch)
            outcome.history.append(metrics)
            if report:
                report(metrics)
            break
        train_loss, train_acc = evaluate(model, x_eval, y_eval)
        val_loss, val_acc = evaluate(model, t["x_val"], t["y_val"])
        ratios = ratio.after()
        step_values = torch.stack(step_losses).tolist() if sizes else []  # one transfer
        metrics = {
            "epoch": epoch,
            "train_loss": _running_sum([v * k for v, k in zip(step_values, sizes)])
            / max(sum(sizes), 1),
            "train_accuracy": train_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "gap": train_acc - val_acc,
            "diverged": 0.0,
            "update_ratio": _geometric_mean(ratios.values()),
            **{f"update_ratio.{_short(name)}": v for name, v in ratios.items()},
        }
        if epoch == tcfg.epochs:  # the end of the trial: the notes' activation statistics
            for layer, s in activation_stats(model, t["x_val"][:512], mcfg.activation).items():
                metrics.update({f"act.{layer}.{k}": v for k, v in s.items() if k != "values"})
        outcome.history.append(metrics)
        if report:
            report(metrics)
    if keep_model:
        outcome.model = model
    return outcome
