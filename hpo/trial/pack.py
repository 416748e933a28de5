"""Trial packing: trials that share an architecture train together as one vectorized model.

Each member is built by the factory exactly as its own trial would be (same seed, so the same
initial weights), then the members' parameters and batchnorm buffers are stacked on a leading
member axis and one ``torch.func.vmap`` of ``functional_call`` runs them all on the same
minibatch. Per-member learning rate, weight decay and momentum enter the optimizer step as
tensors of shape (N,). Everything else a trial does is per member, as in ``train_trial``: its
loss, its divergence (a diverged member stops updating; the rest go on), its metrics, its
update/weight ratios and activation statistics.

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
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from hpo.data.dataset import Dataset
from hpo.trial.train import (
    DIVERGENCE_FACTOR,
    TRAIN_EVAL_SIZE,
    TrialOutcome,
    _geometric_mean,
    _short,
    diverged_metrics,
    model_config,
    tensors,
    train_config,
)
from models.config import ModelConfig

__all__ = ["PER_MEMBER", "pack_key", "packable", "train_pack"]

#: Fields in which the members of one pack may differ.
PER_MEMBER = ("lr", "weight_decay", "momentum", "init_std", "init_constant")


def pack_key(params: Mapping[str, Any]) -> tuple:
    """Members of one pack share this: every field but the per-member ones."""
    return tuple(sorted((k, repr(v)) for k, v in params.items() if k not in PER_MEMBER))


def packable(params: Mapping[str, Any]) -> bool:
    """The mlp family without a checkpoint (finetuning freezes parameters per model)."""
    return params.get("arch", "mlp") == "mlp" and params.get("checkpoint") is None


class _PackedOptimizer:
    """torch.optim.SGD (momentum, nesterov) and Adam, step for step, with (N,) hyperparameters."""

    def __init__(self, kind: str, lr: torch.Tensor, momentum: torch.Tensor) -> None:
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
        for (name, p), g in zip(params.items(), grads):
            lr, mask = self._per(self.lr, p), self._per(alive.to(p.dtype), p)
            s = self.state.setdefault(name, {})
            if self.kind == "adam":
                beta1, beta2, eps = self._per(self.momentum, p), 0.999, 1e-8
                m = s.setdefault("m", torch.zeros_like(p))
                v = s.setdefault("v", torch.zeros_like(p))
                # torch.optim.Adam's arithmetic, in its order (lerp; corrections in double)
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                step_size = (lr.double() / (1 - beta1.double() ** self.t)).to(p.dtype)
                denom = (v.sqrt() / math.sqrt(1 - beta2 ** self.t)).add_(eps)
                p.sub_(mask * step_size * m / denom)
                continue
            d = g
            if self.kind != "sgd":
                mom = self._per(self.momentum, p)
                if "buf" not in s:
                    s["buf"] = g.clone()
                else:
                    s["buf"].mul_(mom).add_(g)
                d = g + mom * s["buf"] if self.kind == "nesterov" else s["buf"]
            p.sub_(mask * lr * d)


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
    from models import build_model

    keys = {pack_key(m) for m in members}
    if len(keys) != 1 or not all(packable(m) for m in members):
        raise ValueError("pack members must share every structural field (only "
                         f"{', '.join(PER_MEMBER)} may differ) and be mlp without a checkpoint")
    n = len(members)
    device = torch.device(device)
    cfgs = [train_config(m) for m in members]
    # Each member starts where its own trial would: built on the CPU from the seed. Members
    # that differ only in lr, weight decay or momentum start alike, so each model is built once.
    built: dict[ModelConfig, nn.Module] = {}
    models = []
    for m in members:
        mcfg = model_config(m)
        if mcfg not in built:
            torch.manual_seed(seed)
            built[mcfg] = build_model(mcfg, input_shape=data.input_shape,
                                      num_classes=data.num_classes).to(device)
        models.append(built[mcfg])  # the same module object for members that start alike
    params, buffers = stack_module_state(models)  # name -> (N, *shape)
    # The template that vmap calls with each member's tensors; its own tensors are never used.
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    batched = vmap(forward, in_dims=(0, 0, None), randomness="different")
    weights = [k for k, v in params.items() if v.dim() > 2]  # (N, out, in...): matrices, kernels
    wd = torch.tensor([c.weight_decay for c in cfgs], device=device)
    opt = _PackedOptimizer(cfgs[0].optimizer, torch.tensor([c.lr for c in cfgs], device=device),
                           torch.tensor([c.momentum for c in cfgs], device=device))
    t = tensors(data, device)
    x_train, y_train = t["x_train"], t["y_train"]
    x_eval, y_eval = x_train[:TRAIN_EVAL_SIZE], y_train[:TRAIN_EVAL_SIZE]
    generator = torch.Generator().manual_seed(seed)
    outcomes = [TrialOutcome() for _ in range(n)]
    alive = torch.ones(n, dtype=torch.bool, device=device)
    initial = torch.full((n,), math.nan, device=device)
    size, batch, epochs = len(y_train), cfgs[0].batch_size, cfgs[0].epochs

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base.eval()
        with torch.no_grad():
            loss_sum, correct = torch.zeros(n, device=device), torch.zeros(n, device=device)
            for i in range(0, len(y), 1024):
                logits = batched(params, buffers, x[i:i + 1024])  # (N, B, classes)
                loss_sum += nn.functional.cross_entropy(
                    logits.transpose(1, 2), y[i:i + 1024].expand(n, -1), reduction="none"
                ).sum(1)
                correct += (logits.argmax(2) == y[i:i + 1024]).sum(1)
        return loss_sum / len(y), correct / len(y)

    for epoch in range(1, epochs + 1):
        base.train()
        order = torch.randperm(size, generator=generator).to(device)
        loss_sum, seen = torch.zeros(n, device=device), 0
        diverged_now = torch.zeros(n, dtype=torch.bool, device=device)
        before: dict[str, torch.Tensor] = {}
        for i in range(0, size, batch):
            idx = order[i:i + batch]
            logits = batched(params, buffers, x_train[idx])  # (N, B, classes)
            data_loss = nn.functional.cross_entropy(
                logits.transpose(1, 2), y_train[idx].expand(n, -1), reduction="none").mean(1)
            l2 = sum((params[k].pow(2).flatten(1).sum(1) for k in weights),
                     torch.zeros(n, device=device))
            loss = data_loss + 0.5 * wd * l2  # (N,)
            value = loss.detach()
            initial = torch.where(torch.isnan(initial), value, initial)
            bad = alive & (~torch.isfinite(value) | (value > DIVERGENCE_FACTOR *
                                                     initial.clamp(min=1e-3)))
            alive &= ~bad  # these stop here, as their own trials would
            diverged_now |= bad
            # the dead get a zero gradient (masked, not indexed: indexing would sync)
            grads = torch.autograd.grad(torch.where(alive, loss, 0.0).sum(),
                                        list(params.values()))
            if i + batch >= size:  # the epoch's last step: measure update/weight
                before = {k: params[k].detach().clone() for k in weights}
            opt.step(params, grads, alive)
            loss_sum += torch.where(alive, data_loss.detach(), 0.0) * len(idx)
            seen += len(idx)
        reports: list[dict[str, float] | None] = [None] * n
        for j in torch.nonzero(diverged_now).flatten().tolist():
            outcomes[j].status = "diverged"
            reports[j] = diverged_metrics(epoch)
        living = torch.nonzero(alive).flatten().tolist()
        if living:
            train_loss, train_acc = evaluate(x_eval, y_eval)
            val_loss, val_acc = evaluate(t["x_val"], t["y_val"])
            # (5, N): one transfer for every member's metrics
            loss_j, train_j, val_loss_j, val_j, initial_j = torch.stack(
                [loss_sum, train_acc, val_loss, val_acc, initial]).tolist()
            ratios = _update_ratios(params, before, living)
            for j, member_ratios in zip(living, ratios):
                reports[j] = {
                    "epoch": epoch, "train_loss": loss_j[j] / max(seen, 1),
                    "train_accuracy": train_j[j], "val_loss": val_loss_j[j],
                    "val_accuracy": val_j[j], "gap": train_j[j] - val_j[j], "diverged": 0.0,
                    "update_ratio": _geometric_mean(member_ratios.values()),
                    **{f"update_ratio.{_short(k)}": v for k, v in member_ratios.items()},
                }
            if epoch == epochs:
                _activation_stats(models, base, params, buffers, living, reports,
                                  t["x_val"][:512], members[0]["activation"])
        else:
            initial_j = initial.tolist()
        for j, r in enumerate(reports):
            if r is not None:
                outcomes[j].history.append(r)
                outcomes[j].initial_loss = initial_j[j]
        if report:
            report(reports)
        if not living:
            break
    return outcomes


def _member_by_member(device: torch.device) -> bool:
    """Whether end-of-epoch diagnostics go member by member: on the CPU, which keeps its results
    bit for bit what they were (a reduction over one member and one over all members may round
    differently); elsewhere one launch per member and layer would cost more than the training."""
    return device.type == "cpu"


def _update_ratios(params: dict[str, torch.Tensor], before: dict[str, torch.Tensor],
                   living: list[int]) -> list[dict[str, float]]:
    """Per living member: layer -> ||W after - W before|| / ||W before|| over the last step."""
    norms = {}  # layer -> [(||W before||, ||update||) per living member]
    for k, old in before.items():
        new = params[k].detach()
        if _member_by_member(old.device):
            norms[k] = [(float(old[j].norm()), float((new[j] - old[j]).norm())) for j in living]
        else:  # all members in one reduction per layer, one transfer
            pair = torch.stack([old.flatten(1).norm(dim=1), (new - old).flatten(1).norm(dim=1)], 1)
            norms[k] = pair[living].tolist()  # (living, 2)
    out: list[dict[str, float]] = [{} for _ in living]
    for k, pairs in norms.items():
        for ratios, (norm, step) in zip(out, pairs):
            ratios[k] = step / norm if norm > 0 else math.inf
    return out


def _activation_stats(models: list[nn.Module], base: nn.Module, params: dict, buffers: dict,
                      living: list[int], reports: list, x: torch.Tensor, activation: str) -> None:
    """The end-of-trial activation statistics of each living member, in evaluation mode."""
    from hpo.trial.instruments import activation_stats, block_stats

    if _member_by_member(x.device):  # on a module loaded with each member's tensors in turn
        with torch.no_grad():
            for j in living:
                model = models[j]
                model.load_state_dict({**{k: v[j] for k, v in params.items()},
                                       **{k: v[j] for k, v in buffers.items()}})
                for layer, s in activation_stats(model, x, activation).items():
                    reports[j].update({f"act.{layer}.{k}": v for k, v in s.items()
                                       if k != "values"})
        return

    blocks = list(base.features)

    def member_stats(p: dict, b: dict) -> list[dict[str, torch.Tensor]]:
        captured: dict[int, torch.Tensor] = {}
        hooks = [block.act.register_forward_hook(
            lambda _m, _i, out, i=i: captured.__setitem__(i, out))
            for i, block in enumerate(blocks)]
        try:
            functional_call(base, (p, b), (x,))
        finally:
            for h in hooks:
                h.remove()
        return [block_stats(captured[i], activation) for i in range(len(blocks))]

    base.eval()
    with torch.no_grad():
        stats = vmap(member_stats)(params, buffers)  # per block: name -> (N,)
    names = [(f"act.layer{i + 1}.{k}", v) for i, s in enumerate(stats) for k, v in s.items()]
    values = torch.stack([v for _, v in names])[:, living].tolist()  # (stats, living)
    for column, j in enumerate(living):
        reports[j].update({name: row[column] for (name, _), row in zip(names, values)})

