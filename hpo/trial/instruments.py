"""A trial's instruments: the notes' update/weight ratio and activation statistics.

They run inside training (one trial, or a pack through ``torch.func.vmap``) and in the final
evaluation; their results become the ``update_ratio*`` and ``act.*`` keys of the epoch metrics.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["RELU_FAMILY", "UpdateRatio", "activation_stats", "block_stats"]


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
        if not self.params:
            return {}
        # (layers, 2): each layer's ||W_before|| and ||update||, fetched in one transfer
        norms = torch.stack([torch.stack([old.norm(), (p.detach() - old).norm()])
                             for (_, p), old in zip(self.params, self._copies)]).tolist()
        return {name: step / norm if norm > 0 else math.inf
                for (name, _), (norm, step) in zip(self.params, norms)}


#: Activations whose units can die (never positive on any input).
RELU_FAMILY = ("relu", "leaky_relu", "prelu", "elu", "maxout")


@torch.no_grad()
def activation_stats(model: nn.Module, x: torch.Tensor, activation: str
                     ) -> dict[str, dict[str, Any]]:
    """Per hidden block: ``block_stats`` as floats, and the activations themselves (flattened,
    on the model's device) for histograms. Evaluation mode."""
    blocks = list(getattr(model, "features", []))
    captured: dict[int, torch.Tensor] = {}
    hooks = [b.act.register_forward_hook(
        lambda _m, _i, out, i=i: captured.__setitem__(i, out.detach()))
        for i, b in enumerate(blocks)]
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    stats = {}
    for i in range(len(blocks)):
        a = captured[i]  # (N, H) or (N, C, H, W)
        summary = block_stats(a, activation)
        values = torch.stack(list(summary.values())).tolist()  # one transfer per block
        stats[f"layer{i + 1}"] = {**dict(zip(summary, values)), "values": a.flatten()}
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
