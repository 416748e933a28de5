"""Trial packing: trials that share an architecture train together as one vectorized model.

Each member is built by the factory exactly as its own trial would be (same seed, so the same
initial weights), then the members' parameters and batchnorm buffers are stacked on a leading
member axis and one ``torch.func.vmap`` of ``functional_call`` runs them all on the same
minibatch. Per-member learning rate, weight decay and momentum enter the optimizer step as
tensors of shape (N,). Everything else a trial does is per member, as in ``train_trial``, and by
the same code: its loss, its divergence (``hpo.trial.divergence``; a diverged member stops
updating, the rest go on), its metrics (``hpo.trial.metrics``), its update/weight ratios and
activation statistics (``hpo.trial.instruments``). Two differences that change no result
beyond rounding: a member's L2 term is in its loss, where one trial's optimizer adds the same
gradient (``hpo.trial.train.build_optimizer``); a member stops on the step that diverged, one
trial within ``DIVERGENCE_CHECK_STEPS`` steps of it, in the same epoch.

Members must agree on every field but ``PER_MEMBER``: those only scale an update or an initial
draw. Dropout and the activations' shape parameters stay shared because they live inside the
modules that vmap shares.

A pack trains on one device, as a trial does (``hpo.trial.train``). Its steps need no host sync:
a diverged member is masked on the device, so a pack whose members have all diverged stops at
the end of that epoch. The end-of-epoch diagnostics go member by member on the CPU and are
vectorized over members elsewhere (``_member_by_member``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from hpo.data.dataset import Dataset
from hpo.errors import UnknownNameError
from hpo.trial.config import OPTIMIZERS, TrainConfig
from hpo.trial.divergence import loss_diverged
from hpo.trial.instruments import (
    activation_stats,
    block_stats,
    captured_activations,
    update_ratio,
    update_ratios,
)
from hpo.trial.metrics import activation_metrics, diverged_metrics, epoch_metrics
from hpo.trial.status import TrialStatus
from hpo.trial.train import TRAIN_EVAL_SIZE, TrialOutcome, model_config, tensors, train_config
from models.config import ModelConfig

__all__ = ["PER_MEMBER", "pack_key", "packable", "train_pack"]

#: Fields in which the members of one pack may differ.
PER_MEMBER = ("lr", "weight_decay", "momentum", "init_std", "init_constant")


def pack_key(params: Mapping[str, Any]) -> tuple:
    """Members of one pack share this: every field but the per-member ones."""
    return tuple(sorted((k, repr(v)) for k, v in params.items() if k not in PER_MEMBER))


def packable(params: Mapping[str, Any]) -> bool:
    """The factory's mlp without a checkpoint (finetuning freezes parameters per model); not a
    network of the user's (``builder``), whose modules hpo does not know how to stack."""
    return (params.get("arch", "mlp") == "mlp" and params.get("checkpoint") is None
            and params.get("builder") is None)


class _PackedOptimizer:
    """torch.optim.SGD (momentum, nesterov) and Adam, step for step, with (N,) hyperparameters:
    one update rule per name of ``OPTIMIZERS``, as ``hpo.trial.train.build_optimizer`` builds
    them."""

    def __init__(self, kind: str, lr: torch.Tensor, momentum: torch.Tensor) -> None:
        if kind not in OPTIMIZERS:
            raise UnknownNameError("optimizer", kind, list(OPTIMIZERS))
        self.kind, self.lr, self.momentum = kind, lr, momentum
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.t = 0

    @staticmethod
    def _per(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return value.view(-1, *([1] * (like.dim() - 1)))  # (N, 1, ..., 1)

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: Sequence[torch.Tensor],
             alive: torch.Tensor) -> None:
        self.t += 1
        update = _PACKED_UPDATES[self.kind]
        for (name, p), g in zip(params.items(), grads):
            lr, mask = self._per(self.lr, p), self._per(alive.to(p.dtype), p)
            update(self, self.state.setdefault(name, {}), p, g, lr, mask)

    def _buffer(self, s: dict[str, torch.Tensor], p: torch.Tensor, g: torch.Tensor
                ) -> torch.Tensor:
        """The momentum buffer after this step's gradient, as torch.optim.SGD keeps it."""
        if "buf" not in s:
            s["buf"] = g.clone()
        else:
            s["buf"].mul_(self._per(self.momentum, p)).add_(g)
        return s["buf"]

    def _sgd(self, s: dict, p: torch.Tensor, g: torch.Tensor, lr: torch.Tensor,
             mask: torch.Tensor) -> None:
        p.sub_(mask * lr * g)

    def _momentum(self, s: dict, p: torch.Tensor, g: torch.Tensor, lr: torch.Tensor,
                  mask: torch.Tensor) -> None:
        p.sub_(mask * lr * self._buffer(s, p, g))

    def _nesterov(self, s: dict, p: torch.Tensor, g: torch.Tensor, lr: torch.Tensor,
                  mask: torch.Tensor) -> None:
        buf = self._buffer(s, p, g)
        p.sub_(mask * lr * (g + self._per(self.momentum, p) * buf))

    def _adam(self, s: dict, p: torch.Tensor, g: torch.Tensor, lr: torch.Tensor,
              mask: torch.Tensor) -> None:
        beta1, beta2, eps = self._per(self.momentum, p), 0.999, 1e-8
        m = s.setdefault("m", torch.zeros_like(p))
        v = s.setdefault("v", torch.zeros_like(p))
        # torch.optim.Adam's arithmetic, in its order (lerp; corrections in double)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step_size = (lr.double() / (1 - beta1.double() ** self.t)).to(p.dtype)
        denom = (v.sqrt() / math.sqrt(1 - beta2 ** self.t)).add_(eps)
        p.sub_(mask * step_size * m / denom)


_PackedUpdate = Callable[[_PackedOptimizer, dict, torch.Tensor, torch.Tensor, torch.Tensor,
                          torch.Tensor], None]

#: The packed update rule of each name of ``OPTIMIZERS``.
_PACKED_UPDATES: dict[str, _PackedUpdate] = {
    "sgd": _PackedOptimizer._sgd,
    "momentum": _PackedOptimizer._momentum,
    "nesterov": _PackedOptimizer._nesterov,
    "adam": _PackedOptimizer._adam,
}


@dataclass
class _EpochSums:
    """What one epoch's training steps leave on the device, for its reports."""

    loss_sum: torch.Tensor  # (N,) each living member's data loss summed over its examples
    seen: int  # examples per member in the epoch
    diverged: torch.Tensor  # (N,) bool: the members that diverged in this epoch
    before: dict[str, torch.Tensor]  # weight name -> (N, ...) before the epoch's last step


class _Pack:
    """The members as one model: their parameters and batchnorm buffers stacked on a leading
    member axis, one vmapped forward, the packed optimizer, and which members still train."""

    def __init__(self, models: list[nn.Module], cfgs: Sequence[TrainConfig],
                 device: torch.device) -> None:
        self.models, self.n, self.device = models, len(models), device
        self.params, self.buffers = stack_module_state(models)  # name -> (N, *shape)
        # The template that vmap calls with each member's tensors; its own tensors are never used.
        self.base = copy.deepcopy(models[0]).to("meta")
        self.batched = vmap(self._forward, in_dims=(0, 0, None), randomness="different")
        # (N, out, in...): the weight matrices and kernels, which L2 and update/weight are about
        self.weights = [k for k, v in self.params.items() if v.dim() > 2]
        self.wd = torch.tensor([c.weight_decay for c in cfgs], device=device)
        self.opt = _PackedOptimizer(cfgs[0].optimizer,
                                    torch.tensor([c.lr for c in cfgs], device=device),
                                    torch.tensor([c.momentum for c in cfgs], device=device))
        self.alive = torch.ones(self.n, dtype=torch.bool, device=device)  # not diverged
        self.initial = torch.full((self.n,), math.nan, device=device)  # each first step's loss

    def _forward(self, p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (p, b), (x,))

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch: int
                    ) -> _EpochSums:
        """One pass over ``x``, ``y`` in ``order``: every living member steps on each batch; one
        that diverges stops at that step, as its own trial would. No host sync."""
        self.base.train()
        size, n = len(y), self.n
        sums = _EpochSums(torch.zeros(n, device=self.device), 0,
                          torch.zeros(n, dtype=torch.bool, device=self.device), {})
        for i in range(0, size, batch):
            idx = order[i:i + batch]
            logits = self.batched(self.params, self.buffers, x[idx])  # (N, B, classes)
            data_loss = nn.functional.cross_entropy(
                logits.transpose(1, 2), y[idx].expand(n, -1), reduction="none").mean(1)
            l2 = sum((self.params[k].pow(2).flatten(1).sum(1) for k in self.weights),
                     torch.zeros(n, device=self.device))
            loss = data_loss + 0.5 * self.wd * l2  # (N,)
            value = loss.detach()
            self.initial = torch.where(torch.isnan(self.initial), value, self.initial)
            bad = self.alive & loss_diverged(value, self.initial)
            self.alive &= ~bad  # these stop here, as their own trials would
            sums.diverged |= bad
            # the dead get a zero gradient (masked, not indexed: indexing would sync)
            grads = torch.autograd.grad(torch.where(self.alive, loss, 0.0).sum(),
                                        list(self.params.values()))
            if i + batch >= size:  # the epoch's last step: measure update/weight
                sums.before = {k: self.params[k].detach().clone() for k in self.weights}
            self.opt.step(self.params, grads, self.alive)
            sums.loss_sum += torch.where(self.alive, data_loss.detach(), 0.0) * len(idx)
            sums.seen += len(idx)
        return sums

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's mean cross-entropy and accuracy on ``x``, ``y``, in evaluation mode:
        two (N,) tensors, on the device."""
        n = self.n
        self.base.eval()
        with torch.no_grad():
            loss_sum = torch.zeros(n, device=self.device)
            correct = torch.zeros(n, device=self.device)
            for i in range(0, len(y), 1024):
                logits = self.batched(self.params, self.buffers, x[i:i + 1024])  # (N, B, classes)
                loss_sum += nn.functional.cross_entropy(
                    logits.transpose(1, 2), y[i:i + 1024].expand(n, -1), reduction="none"
                ).sum(1)
                correct += (logits.argmax(2) == y[i:i + 1024]).sum(1)
        return loss_sum / len(y), correct / len(y)


def train_pack(
    members: Sequence[Mapping[str, Any]],
    data: Dataset,
    *,
    seed: int,
    report: Callable[[list[dict[str, float] | None]], None] | None = None,
    device: torch.device | str = "cpu",
) -> list[TrialOutcome]:
    """Train every member configuration at once on ``device``; ``report`` gets, each epoch, one
    metrics dict per member (None for a member that diverged in an earlier epoch)."""
    keys = {pack_key(m) for m in members}
    if len(keys) != 1 or not all(packable(m) for m in members):
        raise ValueError("pack members must share every structural field (only "
                         f"{', '.join(PER_MEMBER)} may differ) and be mlp without a checkpoint")
    device = torch.device(device)
    cfgs = [train_config(m) for m in members]
    pack = _Pack(_member_models(members, data, seed, device), cfgs, device)
    t = tensors(data, device)
    generator = torch.Generator().manual_seed(seed)
    outcomes = [TrialOutcome() for _ in members]
    epochs = cfgs[0].epochs
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(t["y_train"]), generator=generator).to(device)
        sums = pack.train_epoch(t["x_train"], t["y_train"], order, cfgs[0].batch_size)
        reports: list[dict[str, float] | None] = [None] * pack.n
        for j in torch.nonzero(sums.diverged).flatten().tolist():
            outcomes[j].status = TrialStatus.DIVERGED
            reports[j] = diverged_metrics(epoch)
        living = torch.nonzero(pack.alive).flatten().tolist()
        if living:
            initial = _living_reports(pack, epoch, sums, t, living, reports)
            if epoch == epochs:
                _activation_reports(pack, living, reports, t["x_val"][:512],
                                    members[0]["activation"])
        else:
            initial = pack.initial.tolist()
        for j, r in enumerate(reports):
            if r is not None:
                outcomes[j].history.append(r)
                outcomes[j].initial_loss = initial[j]
        if report:
            report(reports)
        if not living:
            break
    return outcomes


def _member_models(members: Sequence[Mapping[str, Any]], data: Dataset, seed: int,
                   device: torch.device) -> list[nn.Module]:
    """Each member's model, built on the CPU from the seed as its own trial builds it, then
    moved. Members that differ only in lr, weight decay or momentum start alike, so each model
    is built once (the same module object for members that start alike)."""
    from models import build_model

    built: dict[ModelConfig, nn.Module] = {}
    models = []
    for m in members:
        mcfg = model_config(m)
        if mcfg not in built:
            torch.manual_seed(seed)
            built[mcfg] = build_model(mcfg, input_shape=data.input_shape,
                                      num_classes=data.num_classes).to(device)
        models.append(built[mcfg])
    return models


def _living_reports(pack: _Pack, epoch: int, sums: _EpochSums, t: Mapping[str, torch.Tensor],
                    living: list[int], reports: list[dict[str, float] | None]) -> list[float]:
    """Fill in the epoch's metrics of each living member; return every member's initial loss
    (fetched with the metrics, in one transfer)."""
    _, train_acc = pack.evaluate(t["x_train"][:TRAIN_EVAL_SIZE], t["y_train"][:TRAIN_EVAL_SIZE])
    val_loss, val_acc = pack.evaluate(t["x_val"], t["y_val"])
    # (5, N): one transfer for every member's metrics
    loss_j, train_j, val_loss_j, val_j, initial_j = torch.stack(
        [sums.loss_sum, train_acc, val_loss, val_acc, pack.initial]).tolist()
    ratios = _update_ratios(pack.params, sums.before, living)
    for j, member_ratios in zip(living, ratios):
        reports[j] = epoch_metrics(epoch, train_loss=loss_j[j] / max(sums.seen, 1),
                                   train_accuracy=train_j[j], val_loss=val_loss_j[j],
                                   val_accuracy=val_j[j], update_ratios=member_ratios)
    return initial_j


def _member_by_member(device: torch.device) -> bool:
    """Whether end-of-epoch diagnostics go member by member: on the CPU, which keeps its results
    bit for bit what they were (a reduction over one member and one over all members may round
    differently); elsewhere one launch per member and layer would cost more than the training."""
    return device.type == "cpu"


def _update_ratios(params: dict[str, torch.Tensor], before: dict[str, torch.Tensor],
                   living: list[int]) -> list[dict[str, float]]:
    """Per living member: layer -> ||W after - W before|| / ||W before|| over the last step."""
    if not before or _member_by_member(next(iter(before.values())).device):
        # each member's own weights, as its own trial measures them
        return [update_ratios({k: old[j] for k, old in before.items()},
                              {k: params[k].detach()[j] for k in before}) for j in living]
    out: list[dict[str, float]] = [{} for _ in living]
    for k, old in before.items():  # all members in one reduction per layer, one transfer
        new = params[k].detach()
        pair = torch.stack([old.flatten(1).norm(dim=1), (new - old).flatten(1).norm(dim=1)], 1)
        for ratios, (norm, step) in zip(out, pair[living].tolist()):  # (living, 2)
            ratios[k] = update_ratio(norm, step)
    return out


def _activation_reports(pack: _Pack, living: list[int], reports: list, x: torch.Tensor,
                        activation: str) -> None:
    """Add the end-of-trial activation statistics (``act.*``) of each living member, in
    evaluation mode."""
    if _member_by_member(x.device):  # on a module loaded with each member's tensors in turn
        with torch.no_grad():
            for j in living:
                model = pack.models[j]
                model.load_state_dict({**{k: v[j] for k, v in pack.params.items()},
                                       **{k: v[j] for k, v in pack.buffers.items()}})
                reports[j].update(activation_metrics(activation_stats(model, x, activation)))
        return

    blocks = list(pack.base.features)

    def member_stats(p: dict, b: dict) -> dict[str, dict[str, torch.Tensor]]:
        acts = captured_activations(blocks, lambda: functional_call(pack.base, (p, b), (x,)))
        return {layer: block_stats(a, activation) for layer, a in acts.items()}

    pack.base.eval()
    with torch.no_grad():
        stats = activation_metrics(vmap(member_stats)(pack.params, pack.buffers))  # name -> (N,)
    values = torch.stack(list(stats.values()))[:, living].tolist()  # (stats, living)
    for column, j in enumerate(living):
        reports[j].update({name: row[column] for name, row in zip(stats, values)})
