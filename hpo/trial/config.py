"""How one trial trains: the trial's own configuration, torch-free.

Each field carries its rule (``models.fields.rule``, the same rules as ``models.config``), from
which the study file's ``train:`` section is parsed (``hpo.config``): a default, its limits and
its comment are written here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.fields import Number, OneOf, rule

__all__ = ["OPTIMIZERS", "TrainConfig"]

#: The optimizers a trial can use (the notes' SGD, momentum, Nesterov momentum and Adam).
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How one trial trains; every field may be searched."""

    epochs: int = rule(Number(low=1, integer=True), 20)  # passes over the training split
    batch_size: int = rule(Number(low=1, integer=True), 64)  # examples per step
    optimizer: str = rule(OneOf(OPTIMIZERS), "momentum")  # sgd | momentum | nesterov | adam
    lr: float = rule(Number(low=0, low_open=True), 0.01)  # learning rate; > 0
    # L2 regularization strength (decoupled from the loss value); >= 0
    weight_decay: float = rule(Number(low=0), 0.0)
    # for momentum / nesterov; adam's beta1; 0 <= momentum < 1
    momentum: float = rule(Number(0, 1, high_open=True), 0.9)
