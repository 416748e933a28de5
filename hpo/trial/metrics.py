"""The epoch-metric schema: what every trial reports per epoch, in one place.

Torch-free, so the study file's validator reads the metric names from here. The built-in loop,
packed training and a user's trainable report these keys; the Tune callback, MLflow and the
reports read them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hpo.trial.direction import Direction

__all__ = ["DIVERGED_KEY", "EPOCH_KEY", "METRICS", "activation_metrics", "diverged_metrics",
           "epoch_metrics", "is_trial_metric", "layer_name",
           "reported_values"]

#: The metrics ``search.metric`` may name, and which way each improves.
METRICS: dict[str, Direction] = {
    "val_accuracy": Direction.MAX,
    "val_loss": Direction.MIN,
    "train_accuracy": Direction.MAX,
    "train_loss": Direction.MIN,
    "gap": Direction.MIN,  # train - val accuracy: overfitting
}
EPOCH_KEY = "epoch"  # 1-based; MLflow's step
DIVERGED_KEY = "diverged"  # 1.0 in the last report of a trial whose loss exploded
UPDATE_RATIO_KEY = "update_ratio"  # geometric mean over layers of ||dW|| / ||W||
#: Per-layer keys: ``update_ratio.<layer>`` each epoch, ``act.<layer>.<stat>`` at the end.
PER_LAYER_PREFIXES = ("update_ratio.", "act.")
#: Everything a trial reports per epoch besides the epoch number itself.
TRIAL_METRICS = frozenset({*METRICS, DIVERGED_KEY, UPDATE_RATIO_KEY})


def reported_values(epoch: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one reported epoch: every number but the epoch itself (a user's
    trainable names its metrics freely)."""
    return {k: v for k, v in epoch.items() if k != EPOCH_KEY
            and isinstance(v, int | float) and not isinstance(v, bool)}


def is_trial_metric(key: str) -> bool:
    """Whether ``key`` of a report is one of a trial's metrics (not Tune's or hpo's bookkeeping)."""
    return key in TRIAL_METRICS or key.startswith(PER_LAYER_PREFIXES)


def epoch_metrics(epoch: int, *, train_loss: float, train_accuracy: float, val_loss: float,
                  val_accuracy: float, update_ratios: Mapping[str, float]) -> dict[str, Any]:
    """One epoch's report of a trial that trained: ``update_ratios`` by parameter name."""
    return {
        EPOCH_KEY: epoch,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "gap": train_accuracy - val_accuracy,
        DIVERGED_KEY: 0.0,
        UPDATE_RATIO_KEY: _geometric_mean(update_ratios.values()),
        **{f"update_ratio.{layer_name(param)}": v for param, v in update_ratios.items()},
    }


def layer_name(param: str) -> str:
    """``features.0.linear.weight`` -> ``layer1``; ``classifier.weight`` -> ``classifier``."""
    parts = param.split(".")
    if parts[0] == "features" and len(parts) > 1 and parts[1].isdigit():
        return f"layer{int(parts[1]) + 1}"
    return parts[0]


def activation_metrics(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The end-of-trial keys ``act.<layer>.<stat>`` from per-layer activation statistics
    (layer -> stat -> value); a layer's ``values`` (the activations themselves, kept for
    histograms) are not a metric."""
    return {f"act.{layer}.{stat}": v for layer, s in stats.items() for stat, v in s.items()
            if stat != "values"}


def diverged_metrics(epoch: int) -> dict[str, float]:
    """The last report of a diverged trial: the worst result, so a searcher sees a bad trial
    rather than a missing one."""
    return {EPOCH_KEY: epoch, "train_loss": math.inf, "train_accuracy": 0.0,
            "val_loss": math.inf, "val_accuracy": 0.0, "gap": 0.0, DIVERGED_KEY: 1.0}


def _geometric_mean(values: Any) -> float:
    logs = [math.log(v) for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan
