"""A trial's instruments: the notes' update/weight ratio and activation statistics.

They run inside training (one trial, or a pack through ``torch.func.vmap``) and in the final
evaluation; their results become the ``update_ratio*`` and ``act.*`` keys of the epoch metrics
(``hpo.trial.metrics``). One trial and a pack share the arithmetic: ``update_ratios`` for one
model's weights, ``update_ratio`` for each layer's pair of norms, ``captured_activations`` for the
hooks and ``block_stats`` for the summary of one block.

Activation statistics need the network's activation modules: the ``models.ActivationModule``
instances among its modules (what ``models.activation`` returns, and what the factory's blocks
hold), so a user's own network (``model.builder``) built from the factory's parts gets them too;
else the ``.act`` of each block in ``model.features``. ``activations_found`` says why a network
has none (activations written as functions, or torch's own modules).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from models.activations import ActivationModule

__all__ = ["RELU_FAMILY", "UpdateRatio", "activation_modules", "activation_stats",
           "activations_found", "block_stats", "captured_activations", "update_ratio",
           "update_ratios"]

#: Activations whose units can die (never positive on any input).
RELU_FAMILY = ("relu", "leaky_relu", "prelu", "elu", "maxout")


def update_ratio(weight_norm: float, update_norm: float) -> float:
    """||update|| / ||W before||; infinite for a weight that was all zeros."""
    return update_norm / weight_norm if weight_norm > 0 else math.inf


def update_ratios(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]
                  ) -> dict[str, float]:
    """Per layer of one model: ||W_after - W_before|| / ||W_before||, by the names of ``before``
    (one transfer for all layers)."""
    if not before:
        return {}
    # (layers, 2): each layer's ||W_before|| and ||update||
    norms = torch.stack([torch.stack([old.norm(), (after[name] - old).norm()])
                         for name, old in before.items()]).tolist()
    return {name: update_ratio(norm, step) for name, (norm, step) in zip(before, norms)}


class UpdateRatio:
    """Per-layer ||W_after - W_before|| / ||W_before|| over one optimizer step.

    ``before()`` copies the weight matrices/kernels (biases and BN scales are not what the rule
    of thumb is about); ``after()`` returns the ratios by parameter name.
    """

    def __init__(self, model: nn.Module) -> None:
        self.params = [(n, p) for n, p in model.named_parameters()
                       if p.requires_grad and p.dim() > 1]
        self._copies: list[torch.Tensor] = []

    def before(self) -> None:
        self._copies = [p.detach().clone() for _, p in self.params]

    def after(self) -> dict[str, float]:
        return update_ratios({name: old for (name, _), old in zip(self.params, self._copies)},
                             {name: p.detach() for name, p in self.params})


def _captured_calls(modules: Sequence[nn.Module], forward: Callable[[], object]
                    ) -> list[tuple[int, torch.Tensor]]:
    """``(index in modules, output)`` of every call of ``modules`` while ``forward()`` runs, in
    call order: forward hooks, removed afterwards."""
    calls: list[tuple[int, torch.Tensor]] = []
    hooks = [m.register_forward_hook(
        lambda _m, _i, out, i=i: calls.append((i, out.detach())))
        for i, m in enumerate(modules)]
    try:
        forward()
    finally:
        for h in hooks:
            h.remove()
    return calls


def captured_activations(blocks: Sequence[nn.Module], forward: Callable[[], object]
                         ) -> dict[str, torch.Tensor]:
    """What each hidden block's activation (``block.act``) puts out while ``forward()`` runs,
    by layer name (``layer1``, ...): forward hooks, removed afterwards. Under ``vmap`` the
    tensors are one member's."""
    acts = [cast(nn.Module, block.act) for block in blocks]
    captured = dict(_captured_calls(acts, forward))  # a block's last call, if several
    return {f"layer{i + 1}": captured[i] for i in range(len(blocks))}


def activation_modules(model: nn.Module) -> list[ActivationModule]:
    """The activation modules of ``model`` built by ``models.activation`` (or the factory), in
    the order of ``model.modules()``."""
    return [m for m in model.modules() if isinstance(m, ActivationModule)]


def _blocks_with_act(model: nn.Module) -> list[nn.Module]:
    """``model.features``' blocks when each has an ``.act`` module (the factory's structure,
    whatever the activation's class), else []."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        return []
    blocks = list(features.children())
    if blocks and all(isinstance(getattr(b, "act", None), nn.Module) for b in blocks):
        return blocks
    return []


def activations_found(model: nn.Module) -> str | None:
    """``None`` when ``activation_stats`` can observe ``model``'s activations, else why not, for
    the report's "activation statistics skipped: ..."."""
    if activation_modules(model) or _blocks_with_act(model):
        return None
    torch_acts = sorted({type(m).__name__ for m in model.modules()
                         if type(m).__module__ == nn.modules.activation.__name__})
    uses = (f"it uses torch's {', '.join(f'nn.{n}' for n in torch_acts)}" if torch_acts
            else "its activations are functions in forward(), or it has none")
    return (f"{type(model).__name__} has no activation module from models.activation ({uses}); "
            "build them with models.activation(name) to get their statistics")


@torch.no_grad()
def activation_stats(model: nn.Module, x: torch.Tensor, activation: str | None = None
                     ) -> dict[str, dict[str, Any]]:
    """Per activation, in forward order (``layer1``, ``layer2``, ...): ``block_stats`` as
    floats, and the activations themselves (flattened, on the model's device) for histograms.
    Evaluation mode.

    The activations are the calls of ``model``'s ``ActivationModule``s while it runs on ``x``
    (a module called twice counts twice; an output of fewer than 2 dimensions is not a layer),
    each summarized for its own ``name`` (``activation`` for one made without a name). A
    network without them falls back to the ``.act`` of each block of ``model.features``,
    summarized for ``activation``. ``{}`` when there is neither: ``activations_found`` says why.
    The factory's networks give the same statistics either way.
    """
    marked = activation_modules(model)
    blocks = [] if marked else _blocks_with_act(model)
    if not marked and not blocks:
        return {}
    was = model.training
    model.eval()
    acts: list[tuple[torch.Tensor, str | None]]  # each activation, and which function it is
    try:
        if marked:
            calls = _captured_calls(marked, lambda: model(x))
            acts = [(a, getattr(marked[i], "name", activation)) for i, a in calls if a.dim() >= 2]
        else:
            captured = captured_activations(blocks, lambda: model(x))
            acts = [(a, activation) for a in captured.values()]
    finally:
        model.train(was)
    stats = {}
    for n, (a, name) in enumerate(acts):  # a: (N, H) or (N, C, H, W)
        summary = block_stats(a, name)
        values = torch.stack(list(summary.values())).tolist()  # one transfer per block
        stats[f"layer{n + 1}"] = {**dict(zip(summary, values)), "values": a.flatten()}
    return stats


def block_stats(a: torch.Tensor, activation: str | None) -> dict[str, torch.Tensor]:
    """One block's activations ``a`` (N, H) or (N, C, H, W) summarized as 0-dim tensors: mean,
    std, dead fraction (relu family), saturated fraction (sigmoid/tanh).

    Tensor arithmetic only, so ``torch.func.vmap`` maps it over a pack's members.
    """
    units = a.transpose(0, 1).reshape(a.shape[1], -1)  # (H, N*spatial)
    s = {"mean": a.mean(), "std": a.std()}
    if activation in RELU_FAMILY:
        s["dead"] = (units.max(1).values <= 0).float().mean()  # never positive
    if activation == "tanh":
        s["saturated"] = (a.abs() > 0.99).float().mean()
    elif activation == "sigmoid":
        s["saturated"] = ((a < 0.01) | (a > 0.99)).float().mean()
    return s
