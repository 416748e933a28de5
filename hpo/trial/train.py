"""One trial: data -> model -> train -> per-epoch metrics. Plain PyTorch, no Ray, no MLflow.

``train_trial`` is what a Ray Tune trial runs (through ``hpo.execution.round``) and what
``hpo train`` runs in-process. Data are in-memory tensors sliced by a seeded permutation; no
DataLoader, except for a ``TorchData`` (a ``data.loader``'s torch Datasets, ``_Loaders``). Also
here: the trial's optimizers (``build_optimizer``, one per name of
``OPTIMIZERS``), its L2 penalty and its evaluation, which the sanity checks and packed training
(``hpo.trial.pack``) share. What an epoch reports is ``hpo.trial.metrics``'s; when a loss has
diverged is ``hpo.trial.divergence``'s.

A trial trains on one device (``trial_device``: the GPU when it was given one): the model, the
optimizer state, the data (moved once per trial) and every per-epoch statistic live there, and
only scalars come back to the host. The permutation is drawn on the CPU and its indices moved, so
every device sees the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

import hpo.usercode as usercode
from hpo.data import TorchData
from hpo.data.dataset import Dataset
from hpo.errors import Problem, UnknownNameError, UserCodeError
from hpo.trial.config import OPTIMIZERS, TrainConfig
from hpo.trial.contract import Trial
from hpo.trial.divergence import loss_diverged
from hpo.trial.instruments import UpdateRatio, activation_stats
from hpo.trial.metrics import activation_metrics, diverged_metrics, epoch_metrics
from hpo.trial.status import TrialStatus
from models.config import ModelConfig

__all__ = ["TRAIN_EVAL_SIZE", "TrialOutcome", "build_optimizer", "evaluate", "l2_penalty",
           "build_trial_model", "fit", "model_config", "tensors", "train_config", "train_trial", "trial_device",
           "trial_threads"]

#: Train accuracy is measured in evaluation mode on this many fixed training examples.
TRAIN_EVAL_SIZE = 1000

_MODEL_FIELDS = {f.name for f in fields(ModelConfig)}
_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def model_config(params: Mapping[str, Any]) -> ModelConfig:
    """The model's fields of a trial's parameters (``hidden`` as a tuple of ints)."""
    values = {k: v for k, v in params.items() if k in _MODEL_FIELDS}
    if "hidden" in values:
        values["hidden"] = tuple(int(h) for h in values["hidden"])
    return ModelConfig(**values)


def build_trial_model(params: Mapping[str, Any], data: Any) -> nn.Module:
    """The trial's network on the CPU: the user's ``model.builder`` when the study names one
    (called with the flat config, the input shape and the class count), else the factory's.
    Seed torch first: the initial weights come from its generator."""
    from models import build_model

    if not params.get("builder"):
        return build_model(model_config(params), input_shape=data.input_shape,
                           num_classes=data.num_classes)
    ref = params["builder"]
    model = usercode.load(ref, field="model.builder")(dict(params), tuple(data.input_shape),
                                                      data.num_classes)
    if not isinstance(model, nn.Module):
        raise UserCodeError([Problem("model.builder", f"{ref} returned {type(model).__name__}, "
                                     "not a torch.nn.Module", ref,
                                     "build(config, input_shape, num_classes) -> nn.Module")])
    return model


def train_config(params: Mapping[str, Any]) -> TrainConfig:
    """The training fields of a trial's parameters."""
    return TrainConfig(**{k: v for k, v in params.items() if k in _TRAIN_FIELDS})


@dataclass
class TrialOutcome:
    """What a finished trial leaves: its history and status (the model stays with the caller)."""

    status: TrialStatus = TrialStatus.OK  # OK, or DIVERGED: stopped early
    history: list[dict[str, float]] = field(default_factory=list)
    initial_loss: float = math.nan
    model: nn.Module | None = None  # with keep_model: the trained model, on the trial's device

    @property
    def last(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


_OptimizerBuilder = Callable[[list[nn.Parameter], TrainConfig], torch.optim.Optimizer]

#: One builder per name of ``hpo.trial.config.OPTIMIZERS``: the notes' SGD, momentum, Nesterov
#: momentum and Adam (``momentum`` as its beta1). torch refuses Nesterov without momentum; with
#: momentum 0 it is plain SGD.
_OPTIMIZER_BUILDERS: dict[str, _OptimizerBuilder] = {
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=0.0, nesterov=False),
    "momentum": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                                    nesterov=False),
    "nesterov": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                                    nesterov=cfg.momentum > 0),
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999)),
}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over the model's trainable parameters; raises ``UnknownNameError`` for a
    name that is not in ``OPTIMIZERS``."""
    if cfg.optimizer not in OPTIMIZERS:
        raise UnknownNameError("optimizer", cfg.optimizer, list(OPTIMIZERS))
    params = [p for p in model.parameters() if p.requires_grad]
    return _OPTIMIZER_BUILDERS[cfg.optimizer](params, cfg)


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


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in evaluation mode (on the device of ``x``)."""
    return _evaluate(model, ((x[i:i + batch_size], y[i:i + batch_size])
                             for i in range(0, len(y), batch_size)))


@torch.no_grad()
def _evaluate(model: nn.Module,
              batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """``evaluate`` over ``batches`` of (x, y); NaN for none."""
    was_training = model.training
    model.eval()
    losses, hits, n = [], [], 0
    for x, y in batches:
        logits = model(x)  # (B, classes)
        losses.append(nn.functional.cross_entropy(logits, y, reduction="sum"))
        hits.append((logits.argmax(1) == y).sum())
        n += len(y)
    model.train(was_training)
    if n == 0:
        return math.nan, math.nan
    loss_sum = _running_sum(torch.stack(losses).tolist())  # one transfer for all batches
    return loss_sum / n, sum(torch.stack(hits).tolist()) / n


def tensors(data: Dataset, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The dataset as tensors on ``device`` (copies: arrays from Ray's object store are
    read-only)."""
    return {k: torch.from_numpy(np.array(getattr(data, k))).to(device) for k in
            ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}


def trial_device(gpu: bool) -> torch.device:
    """Where a trial trains: CUDA when it was given a GPU and this process can use one, else
    the CPU."""
    return torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")


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


def train_trial(
    params: Mapping[str, Any],
    data: Dataset | TorchData,
    *,
    seed: int,
    report: Callable[[dict[str, float]], None] | None = None,
    keep_model: bool = False,
    device: torch.device | str = "cpu",
) -> TrialOutcome:
    """Train one configuration on ``device``; ``report`` gets each epoch's metrics as they come.

    The model is built on the CPU (the same initial weights on every device) and then moved.

    Divergence (``hpo.trial.divergence``: a non-finite loss, or one DIVERGENCE_FACTOR times the
    first batch's) stops the trial early with status DIVERGED and a last report whose metrics are
    the worst possible, so a searcher sees a bad result rather than a missing one.

    A ``TorchData`` is read through DataLoaders (``_Loaders``) with the same metrics; arrays
    are tensors on the device, batched by a seeded permutation (``_Tensors``).
    """
    torch.manual_seed(seed)
    tcfg = train_config(params)
    model = build_trial_model(params, data)
    model.to(device)
    optimizer = build_optimizer(model, tcfg)
    feed = (_Loaders(data, tcfg.batch_size, seed, device) if isinstance(data, TorchData)
            else _Tensors(tensors(data, device), tcfg.batch_size, seed, device))
    ratio = UpdateRatio(model)
    outcome = TrialOutcome()

    for epoch in range(1, tcfg.epochs + 1):
        train_loss = _train_epoch(model, optimizer, tcfg, feed.epoch(), feed.steps, ratio,
                                  outcome)
        if train_loss is None:
            outcome.status = TrialStatus.DIVERGED
            metrics = diverged_metrics(epoch)
        else:
            metrics = _epoch_report(model, epoch, train_loss, feed, ratio)
            if epoch == tcfg.epochs:  # the end of the trial: the notes' activation statistics
                metrics.update(_activation_report(model, feed.first_val(512),
                                                  params.get("activation")))
        outcome.history.append(metrics)
        if report:
            report(metrics)
        if outcome.status is TrialStatus.DIVERGED:
            break
    if keep_model:
        outcome.model = model
    return outcome


def fit(config: dict[str, Any], trial: Trial) -> None:
    """hpo's own loop as a trainable (``hpo.trial.contract``): the contract's reference
    implementation, which every trial of a study without ``trainable:`` runs."""
    train_trial(config, trial.data, seed=trial.seed, device=trial.device,
                report=lambda metrics: trial.report(**metrics))


class _Tensors:
    """A trial's arrays as tensors on its device: each epoch's batches by a permutation drawn
    on the CPU from the trial's seed."""

    def __init__(self, t: Mapping[str, torch.Tensor], batch_size: int, seed: int,
                 device: torch.device | str) -> None:
        self.t, self.batch_size, self.device = t, batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = math.ceil(len(t["y_train"]) / batch_size)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.t["x_train"], self.t["y_train"]
        order = torch.randperm(len(y), generator=self.generator).to(self.device)
        return ((x[idx], y[idx]) for idx in order.split(self.batch_size))

    def evaluate(self, model: nn.Module, split: str, limit: int | None = None
                 ) -> tuple[float, float]:
        return evaluate(model, self.t[f"x_{split}"][:limit], self.t[f"y_{split}"][:limit])

    def first_val(self, n: int) -> torch.Tensor:
        return self.t["x_val"][:n]


class _Loaders:
    """A ``TorchData``'s Datasets through DataLoaders: the train split reshuffled each epoch by
    a generator seeded with the trial's seed, read by the trial's CPUs (its torch threads,
    ``trial_threads``) minus one worker processes (none on one CPU); batches are moved to the
    device as float32 examples and int64 labels."""

    def __init__(self, data: TorchData, batch_size: int, seed: int,
                 device: torch.device | str) -> None:
        self.device = torch.device(device)
        workers = max(torch.get_num_threads() - 1, 0)
        pin = self.device.type == "cuda"
        self.data, self.pin = data, pin
        self.train = data.loader("train", batch_size=batch_size, seed=seed, workers=workers,
                                 pin_memory=pin)
        self.val = data.loader("val", batch_size=1024, workers=workers, pin_memory=pin)
        self.steps = len(self.train)

    def _moved(self, batches: Iterable[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in batches:
            yield (x.to(self.device, torch.float32, non_blocking=self.pin),
                   y.to(self.device, torch.int64, non_blocking=self.pin))

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._moved(self.train)

    def evaluate(self, model: nn.Module, split: str, limit: int | None = None
                 ) -> tuple[float, float]:
        loader = (self.val if split == "val" and limit is None else
                  self.data.loader(split, batch_size=1024, limit=limit))
        return _evaluate(model, self._moved(loader))

    def first_val(self, n: int) -> torch.Tensor:
        x = [x for x, _ in self._moved(self.data.loader("val", batch_size=n, limit=n))]
        return x[0] if x else torch.zeros((0, *self.data.input_shape), device=self.device)


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                 batches: Iterable[tuple[torch.Tensor, torch.Tensor]], steps: int,
                 ratio: UpdateRatio, outcome: TrialOutcome) -> float | None:
    """One pass over the training split's ``steps`` batches: the mean data loss over its
    examples, or None when the loss diverged (that step is not taken). The first step's loss
    becomes ``outcome.initial_loss``; the last step's update is measured by ``ratio``."""
    model.train()
    step_losses, sizes = [], []
    for step, (x, y) in enumerate(batches, 1):
        logits = model(x)  # (B, classes)
        data_loss = nn.functional.cross_entropy(logits, y)
        loss = data_loss + l2_penalty(model, cfg.weight_decay)
        value = loss.item()  # the step's one host sync: divergence must stop this step
        if math.isnan(outcome.initial_loss):
            outcome.initial_loss = value
        if loss_diverged(value, outcome.initial_loss):
            return None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == steps:  # the epoch's last step: measure update/weight
            ratio.before()
        optimizer.step()
        step_losses.append(data_loss.detach())
        sizes.append(len(y))
    step_values = torch.stack(step_losses).tolist() if sizes else []  # one transfer
    return _running_sum([v * k for v, k in zip(step_values, sizes)]) / max(sum(sizes), 1)


def _epoch_report(model: nn.Module, epoch: int, train_loss: float, feed: _Tensors | _Loaders,
                  ratio: UpdateRatio) -> dict[str, Any]:
    """The metrics of an epoch that trained: accuracies in evaluation mode (train accuracy on
    the first TRAIN_EVAL_SIZE training examples), the last step's update/weight ratios."""
    _, train_acc = feed.evaluate(model, "train", TRAIN_EVAL_SIZE)
    val_loss, val_acc = feed.evaluate(model, "val")
    return epoch_metrics(epoch, train_loss=train_loss, train_accuracy=train_acc,
                         val_loss=val_loss, val_accuracy=val_acc, update_ratios=ratio.after())


def _activation_report(model: nn.Module, x: torch.Tensor,
                       activation: str | None) -> dict[str, float]:
    """The end-of-trial ``act.*`` metrics: the model's activation statistics on ``x``."""
    return activation_metrics(activation_stats(model, x, activation))
