"""How one trial trains: the trial's own configuration, torch-free."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OPTIMIZERS", "TrainConfig"]

#: The optimizers a trial can use (the notes' SGD, momentum, Nesterov momentum and Adam).
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How one trial trains; every field may be searched."""

    epochs: int = 20  # passes over the training split
    batch_size: int = 64  # examples per step
    optimizer: str = "momentum"  # sgd | momentum | nesterov | adam
    lr: float = 0.01  # learning rate
    weight_decay: float = 0.0  # L2 regularization strength (decoupled from the loss value)
    momentum: float = 0.9  # for momentum / nesterov; adam's beta1
