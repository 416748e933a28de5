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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import hpo.usercode as usercode
from hpo.data import TorchData
from hpo.data.dataset import Dataset
from hpo.errors import Problem, UnknownNameError, UserCodeError
from hpo.trial import optimizers
from hpo.trial.config import OPTIMIZERS, TrainConfig
from hpo.trial.contract import Trial
from hpo.trial.divergence import loss_diverged
from hpo.trial.instruments import UpdateRatio, activation_stats
from hpo.trial.metrics import activation_metrics, diverged_metrics, epoch_metrics
from hpo.trial.status import TrialStatus
from models.config import ModelConfig

__all__ = ["DIVERGENCE_CHECK_STEPS", "TRAIN_EVAL_SIZE", "TrialOutcome", "WEIGHTS_FILE",
           "build_optimizer", "build_trial_model", "evaluate", "fit", "kept_model", "l2_penalty",
           "model_config", "tensors", "train_config", "train_trial", "trial_device",
           "trial_threads"]

#: Train accuracy is measured in evaluation mode on this many fixed training examples (the
#: first of the seeded split): a sample, as the validation split is, at a small fraction of an
#: epoch's work even on a small training split (digits: 256 of 1437).
TRAIN_EVAL_SIZE = 256
#: A trial checks its loss for divergence every this many steps and at each epoch's last step,
#: one host transfer per check rather than one per step. A diverged trial stops within this
#: many steps of the step that diverged, in the same epoch, and ends as DIVERGED as it would
#: have on that step.
DIVERGENCE_CHECK_STEPS = 8

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
#: momentum 0 it is plain SGD. torch's update rules, stepped without torch.compile's wrappers
#: (``hpo.trial.optimizers``).
_OPTIMIZER_BUILDERS: dict[str, _OptimizerBuilder] = {
    "sgd": lambda params, cfg: optimizers.SGD(params, lr=cfg.lr, momentum=0.0, nesterov=False),
    "momentum": lambda params, cfg: optimizers.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                                   nesterov=False),
    "nesterov": lambda params, cfg: optimizers.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                                   nesterov=cfg.momentum > 0),
    "adam": lambda params, cfg: optimizers.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999)),
}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over the model's trainable parameters, ``cfg.weight_decay`` on the
    weights ``l2_penalty`` covers; raises ``UnknownNameError`` for a name that is not in
    ``OPTIMIZERS``.

    torch's ``weight_decay`` adds ``wd * W`` to each covered weight's gradient before the update
    rule (SGD, momentum, Nesterov, and Adam's L2 form, not AdamW): the gradient of
    ``l2_penalty``, so the optimizer minimizes the same loss without building the penalty's
    graph at every step.
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise UnknownNameError("optimizer", cfg.optimizer, list(OPTIMIZERS))
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if _decays(p)], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if not _decays(p)], "weight_decay": 0.0}]
    return _OPTIMIZER_BUILDERS[cfg.optimizer]([g for g in groups if g["params"]] or params, cfg)


def _decays(p: nn.Parameter) -> bool:
    """Whether the L2 term covers ``p``: weight matrices and kernels, not biases or BN scales."""
    return p.requires_grad and p.dim() > 1


def l2_penalty(model: nn.Module, weight_decay: float) -> torch.Tensor:
    """0.5 * wd * sum ||W||^2 over weight matrices and kernels (not biases, not BN scales).

    The L2 term of the loss a trial minimizes: the sanity check "turning regularization on
    raises the loss" adds it to the loss it measures, and a trial adds it to the loss it checks
    for divergence. Training applies its gradient through the optimizer (``build_optimizer``).
    """
    return _l2_term([p for p in model.parameters() if _decays(p)], weight_decay,
                    next(model.parameters()).device)


def _l2_term(weights: Sequence[torch.Tensor], weight_decay: float,
             device: torch.device) -> torch.Tensor:
    """``l2_penalty`` of the weights it covers, ``weights`` (a trial lists them once)."""
    zero = torch.zeros((), device=device)
    if weight_decay == 0:
        return zero
    return 0.5 * weight_decay * sum((p.pow(2).sum() for p in weights), zero)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in evaluation mode (on the device of ``x``)."""
    return _evaluate(model, [_batched(x, y, batch_size)])[0]


def _batched(x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size))


@torch.no_grad()
def _evaluate(model: nn.Module, parts: Sequence[Iterable[tuple[torch.Tensor, torch.Tensor]]]
              ) -> list[tuple[float, float]]:
    """``evaluate`` of each part's batches of (x, y), NaN for a part without any: one switch
    to evaluation mode and one transfer for them all."""
    was_training = model.training
    model.eval()
    losses, hits, counts = [], [], []  # per batch; counts: (part, examples)
    for part, batches in enumerate(parts):
        for x, y in batches:
            logits = model(x)  # (B, classes)
            losses.append(nn.functional.cross_entropy(logits, y, reduction="sum"))
            hits.append((logits.argmax(1) == y).sum())
            counts.append((part, len(y)))
    model.train(was_training)
    # (2, batches) in float64, which holds every loss and count exactly: one transfer
    loss_values, hit_values = (torch.stack([torch.stack(losses).double(),
                                            torch.stack(hits).double()]).tolist()
                               if losses else ([], []))
    out = []
    for part in range(len(parts)):
        mine = [i for i, (p, _) in enumerate(counts) if p == part]
        n = sum(counts[i][1] for i in mine)
        if n == 0:
            out.append((math.nan, math.nan))
            continue
        loss_sum = _running_sum([loss_values[i] for i in mine])
        out.append((loss_sum / n, sum(int(hit_values[i]) for i in mine) / n))
    return out


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

    The loss minimized is the data loss plus the L2 term (``l2_penalty``), whose gradient the
    optimizer adds (``build_optimizer``); ``train_loss`` reports the data loss alone.

    Divergence (``hpo.trial.divergence``: a non-finite loss, or one DIVERGENCE_FACTOR times the
    first batch's, both with the L2 term) stops the trial early, within
    DIVERGENCE_CHECK_STEPS steps and in the same epoch, with status DIVERGED and a last report
    whose metrics are the worst possible, so a searcher sees a bad result rather than a missing
    one.

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
    objective = _Objective([p for p in model.parameters() if _decays(p)], tcfg.weight_decay,
                           torch.device(device))
    outcome = TrialOutcome()

    for epoch in range(1, tcfg.epochs + 1):
        train_loss = _train_epoch(model, optimizer, objective, feed.epoch(), feed.steps, ratio,
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


#: The trained weights (a state_dict) a trial of hpo's own loop leaves in its
#: ``Trial.checkpoint_dir``, so that the study's final evaluation need not train it again.
WEIGHTS_FILE = "weights.pt"


def fit(config: dict[str, Any], trial: Trial) -> None:
    """hpo's own loop as a trainable (``hpo.trial.contract``): the contract's reference
    implementation, which every trial of a study without ``trainable:`` runs. A trial given a
    folder of its own leaves its trained weights there (``WEIGHTS_FILE``)."""
    outcome = train_trial(config, trial.data, seed=trial.seed, device=trial.device,
                          report=lambda metrics: trial.report(**metrics), keep_model=True)
    if outcome.status is not TrialStatus.DIVERGED:  # a diverged trial's weights are no use
        _keep_weights(outcome.model, trial)


def _keep_weights(model: nn.Module, trial: Trial) -> None:
    """Write the weights whole in the trial's folder (``WEIGHTS_FILE``), or not at all: they
    only spare the final evaluation a retrain, so a write that fails (a full disk) leaves no
    file and the trial ends as it trained. The folder is asked for, and so made, only here: a
    trial that writes no weights leaves no folder (a pruned trial's goes with its weights,
    ``hpo.study.final``)."""
    try:
        folder = trial.checkpoint_dir
    except OSError:  # the folder cannot be made: no weights, as for a failed write
        return
    if folder is None:
        return
    part = folder / (WEIGHTS_FILE + ".part")
    try:
        torch.save(model.state_dict(), part)
        part.replace(folder / WEIGHTS_FILE)
    except (OSError, RuntimeError):  # torch's zip writer reports a failed write as RuntimeError
        part.unlink(missing_ok=True)


def kept_model(params: Mapping[str, Any], data: Any, folder: Path) -> nn.Module | None:
    """The model a trial trained, from the weights it left in ``folder`` (on the CPU); None
    when it left none there (another machine's trial, a packed or diverged one)."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        return None
    model = build_trial_model(params, data)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


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

    def batches(self, split: str, limit: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``limit`` examples of ``split`` (all without one), for evaluation."""
        return _batched(self.t[f"x_{split}"][:limit], self.t[f"y_{split}"][:limit])

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

    def batches(self, split: str, limit: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``limit`` examples of ``split`` (all without one), for evaluation."""
        loader = (self.val if split == "val" and limit is None else
                  self.data.loader(split, batch_size=1024, limit=limit))
        return self._moved(loader)

    def first_val(self, n: int) -> torch.Tensor:
        x = [x for x, _ in self._moved(self.data.loader("val", batch_size=n, limit=n))]
        return x[0] if x else torch.zeros((0, *self.data.input_shape), device=self.device)


@dataclass(frozen=True)
class _Objective:
    """What a trial minimizes besides the data loss: the L2 term over ``weights``."""

    weights: list[nn.Parameter]  # the weight matrices and kernels that decay
    weight_decay: float
    device: torch.device

    def l2(self) -> torch.Tensor:
        """The L2 term of the weights now, a 0-dim tensor on the device (no autograd)."""
        with torch.no_grad():
            return _l2_term(self.weights, self.weight_decay, self.device)


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, objective: _Objective,
                 batches: Iterable[tuple[torch.Tensor, torch.Tensor]], steps: int,
                 ratio: UpdateRatio, outcome: TrialOutcome) -> float | None:
    """One pass over the training split's ``steps`` batches: the mean data loss over its
    examples, or None when the loss diverged. The first step's loss (with the L2 term) becomes
    ``outcome.initial_loss``; the last step's update is measured by ``ratio``.

    The step's loss is the data loss alone: the optimizer applies the L2 term's gradient
    (``build_optimizer``). Divergence is checked every ``DIVERGENCE_CHECK_STEPS`` steps and at
    the epoch's last step (``_diverged``), so the losses stay on the device in between."""
    model.train()
    step_losses: list[torch.Tensor] = []  # each a 0-dim tensor on the device
    sizes: list[int] = []
    checked = 0  # steps whose losses have been checked
    for step, (x, y) in enumerate(batches, 1):
        logits = model(x)  # (B, classes)
        data_loss = nn.functional.cross_entropy(logits, y)
        if step == 1 and math.isnan(outcome.initial_loss):  # the trial's first step
            outcome.initial_loss = float(data_loss.detach() + objective.l2())
        optimizer.zero_grad(set_to_none=True)
        data_loss.backward()
        if step == steps:  # the epoch's last step: measure update/weight
            ratio.before()
        optimizer.step()
        step_losses.append(data_loss.detach())
        sizes.append(len(y))
        if step % DIVERGENCE_CHECK_STEPS == 0 or step == steps:
            if _diverged(step_losses[checked:], objective, outcome.initial_loss):
                return None
            checked = step
    step_values = torch.stack(step_losses).tolist() if sizes else []  # one transfer
    return _running_sum([v * k for v, k in zip(step_values, sizes)]) / max(sum(sizes), 1)


def _diverged(losses: list[torch.Tensor], objective: _Objective, initial: float) -> bool:
    """Whether the worst of ``losses`` (steps' data losses, 0-dim tensors; NaN if any is),
    plus the L2 term of the weights now, counts as diverged against the first step's loss:
    one host transfer."""
    if not losses:
        return False
    with torch.no_grad():
        worst = torch.stack(losses).max() + objective.l2()  # max propagates NaN
    return loss_diverged(float(worst), initial)


def _epoch_report(model: nn.Module, epoch: int, train_loss: float, feed: _Tensors | _Loaders,
                  ratio: UpdateRatio) -> dict[str, Any]:
    """The metrics of an epoch that trained: accuracies in evaluation mode (train accuracy on
    the first TRAIN_EVAL_SIZE training examples), the last step's update/weight ratios."""
    (_, train_acc), (val_loss, val_acc) = _evaluate(
        model, [feed.batches("train", TRAIN_EVAL_SIZE), feed.batches("val")])
    return epoch_metrics(epoch, train_loss=train_loss, train_accuracy=train_acc,
                         val_loss=val_loss, val_accuracy=val_acc, update_ratios=ratio.after())


def _activation_report(model: nn.Module, x: torch.Tensor,
                       activation: str | None) -> dict[str, float]:
    """The end-of-trial ``act.*`` metrics: the model's activation statistics on ``x``."""
    return activation_metrics(activation_stats(model, x, activation))
