"""A trial's status and flags: how the driver reads a finished trial's last epoch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from hpo.trial.metrics import DIVERGED_KEY, UPDATE_RATIO_KEY

__all__ = ["TARGET_UPDATE_RATIO", "UPDATE_RATIO_BAND", "TrialStatus", "classify", "trial_flags"]

#: Below this train and val accuracy (as a multiple of chance) a trial is "underfitting".
UNDERFIT_OVER_CHANCE = 3.0
#: The notes' rule of thumb for update/weight ratios, and the band outside which a trial is flagged.
TARGET_UPDATE_RATIO, UPDATE_RATIO_BAND = 1e-3, (1e-4, 1e-2)


class TrialStatus(StrEnum):
    """A StrEnum: journaled, tagged in MLflow and printed as its value."""

    RUNNING = "running"
    OK = "ok"
    DIVERGED = "diverged"  # the loss exploded; the trial stopped early
    OVERFITTING = "overfitting"  # train - val accuracy above gap.threshold
    UNDERFITTING = "underfitting"  # train and val accuracy both near chance
    FAILED = "failed"  # raised (after search.max_failures retries)

    @property
    def finished(self) -> bool:
        """Trained to its end (whatever it learned), not running and not failed."""
        return self not in (TrialStatus.RUNNING, TrialStatus.FAILED)

    @property
    def eligible(self) -> bool:
        """Its metric may make it the best trial (or place it in refinement's elite)."""
        return self.finished and self is not TrialStatus.DIVERGED


def classify(last: Mapping[str, float], *, gap_threshold: float, num_classes: int) -> TrialStatus:
    """A finished trial's status from its last epoch: diverged, overfitting (its train - val
    ``gap`` above the threshold), underfitting (train and val accuracy both near chance, where
    it reports accuracies), else ok."""
    if last.get(DIVERGED_KEY):
        return TrialStatus.DIVERGED
    train, val = last.get("train_accuracy"), last.get("val_accuracy")
    gap = last.get("gap", (train or 0.0) - (val or 0.0))
    if gap > gap_threshold:
        return TrialStatus.OVERFITTING
    if val is not None and num_classes and (
            max(train or 0.0, val) < min(0.5, UNDERFIT_OVER_CHANCE / num_classes)):
        return TrialStatus.UNDERFITTING
    return TrialStatus.OK


def power_of_ten(x: float) -> str:
    """``1e-2`` for 0.01: how the notes write these ratios."""
    return f"1e{round(math.log10(x))}"


#: Flags a finished trial may carry, and what each says in the notes' words.
FLAGS: dict[str, str] = {
    "update-ratio-high": f"update/weight ratio above {power_of_ten(UPDATE_RATIO_BAND[1])}: learning rate "
                         f"probably too high",
    "update-ratio-low": f"update/weight ratio below {power_of_ten(UPDATE_RATIO_BAND[0])}: learning rate "
                        f"probably too low",
    "dead-units": "more than half of a layer's ReLU units dead: lower the learning rate or use "
                  "leaky_relu / elu / maxout",
    "saturated-units": "more than half of a layer's units saturated: smaller initial weights "
                       "(xavier), batchnorm, or relu",
}


def trial_flags(last: Mapping[str, Any]) -> list[str]:
    """Diagnostics worth a look: update/weight ratio far from ~1e-3, many dead or saturated units."""
    flags = []
    ratio = last.get(UPDATE_RATIO_KEY)
    if ratio is not None and math.isfinite(ratio):
        if ratio < UPDATE_RATIO_BAND[0]:
            flags.append("update-ratio-low")
        elif ratio > UPDATE_RATIO_BAND[1]:
            flags.append("update-ratio-high")
    if any(k.endswith(".dead") and v > 0.5 for k, v in last.items()):
        flags.append("dead-units")
    if any(k.endswith(".saturated") and v > 0.5 for k, v in last.items()):
        flags.append("saturated-units")
    return flags
