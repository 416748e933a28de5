"""A trial's instruments: the notes' update/weight ratio and activation statistics.

They run inside training (one trial, or a pack through ``torch.func.vmap``) and in the final
evaluation; their results become the ``update_ratio*`` and ``act.*`` keys of the epoch metrics
(``hpo.trial.metrics``). One trial and a pack share the arithmetic: ``update_ratios`` for one
model's weights, ``update_ratio`` for each layer's pair of norms, ``captured_activations`` for the
hooks and ``block_stats`` for the summary of one block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["RELU_FAMILY", "UpdateRatio", "activation_stats", "block_stats", "captured_activations",
           "update_ratio", "update_ratios"]

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


def captured_activations(blocks: Sequence[nn.Module], forward: Callable[[], object]
                         ) -> dict[str, torch.Tensor]:
    """What each hidden block's activation (``block.act``) puts out while ``forward()`` runs,
    by layer name (``layer1``, ...): forward hooks, removed afterwards. Under ``vmap`` the
    tensors are one member's."""
    captured: dict[int, torch.Tensor] = {}
    hooks = [block.act.register_forward_hook(
        lambda _m, _i, out, i=i: captured.__setitem__(i, out.detach()))
        for i, block in enumerate(blocks)]
    try:
        forward()
    finally:
        for h in hooks:
            h.remove()
    return {f"layer{i + 1}": captured[i] for i in range(len(blocks))}


@torch.no_grad()
def activation_stats(model: nn.Module, x: torch.Tensor, activation: str
                     ) -> dict[str, dict[str, Any]]:
    """Per hidden block: ``block_stats`` as floats, and the activations themselves (flattened,
    on the model's device) for histograms. Evaluation mode."""
    was = model.training
    model.eval()
    try:
        acts = captured_activations(list(getattr(model, "features", [])), lambda: model(x))
    finally:
        model.train(was)
    stats = {}
    for layer, a in acts.items():  # a: (N, H) or (N, C, H, W)
        summary = block_stats(a, activation)
        values = torch.stack(list(summary.values())).tolist()  # one transfer per block
        stats[layer] = {**dict(zip(summary, values)), "values": a.flatten()}
    return stats


def block_stats(a: torch.Tensor, activation: str) -> dict[str, torch.Tensor]:
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
