"""When a trial's loss counts as diverged: the notes' "the loss explodes", as one rule.

One trial (``hpo.trial.train``) and a pack of trials (``hpo.trial.pack``) stop a member on the
same rule: a loss that is not finite, or more than ``DIVERGENCE_FACTOR`` times the first step's.
Torch-free: a pack hands in tensors and the rule uses only their methods.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    import torch

__all__ = ["DIVERGENCE_FACTOR", "LOSS_FLOOR", "loss_diverged"]

#: A loss this many times the first step's loss counts as diverged ("the loss explodes").
DIVERGENCE_FACTOR = 10.0
#: The first step's loss is taken as at least this, so a near-zero start does not flag noise.
LOSS_FLOOR = 1e-3


@overload
def loss_diverged(loss: float, initial: float) -> bool: ...


@overload
def loss_diverged(loss: torch.Tensor, initial: torch.Tensor) -> torch.Tensor: ...


def loss_diverged(loss: float | torch.Tensor, initial: float | torch.Tensor
                  ) -> bool | torch.Tensor:
    """Whether ``loss`` is not finite or above ``DIVERGENCE_FACTOR * max(initial, LOSS_FLOOR)``.

    Python floats (one trial: the step's loss fetched to the host, compared in float64), or
    (N,) tensors (a pack: one loss per member, compared on the device in their own dtype, with
    no host sync); a tensor result is the (N,) bool mask of the members that diverged.
    """
    if isinstance(loss, (int, float)):
        return not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * max(initial, LOSS_FLOOR)
    return ~loss.isfinite() | (loss > DIVERGENCE_FACTOR * initial.clamp(min=LOSS_FLOOR))
