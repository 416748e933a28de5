"""The model factory's input: every structural and initialization choice, torch-free.

Each field carries its rule (``models.fields.rule``): ``models.validate`` checks a config by
walking them, and a study file's ``model:`` section is parsed by the same rules
(``hpo.config``), so a default, its limits and its comment are written here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.fields import Finetune, Flag, ListOf, Number, OneOf, Text, rule
from models.registry import ACTIVATIONS, ARCHITECTURES, INITIALIZERS

__all__ = ["ModelConfig"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    # a name in ARCHITECTURES: mlp | convnet
    arch: str = rule(OneOf(ARCHITECTURES), "mlp")
    # mlp: layer widths; convnet: channels per block; at least one layer
    hidden: tuple[int, ...] = rule(ListOf(Number(low=1, integer=True)), (128, 128))
    # a name in ACTIVATIONS
    activation: str = rule(OneOf(ACTIVATIONS), "relu")
    # leaky_relu's negative slope; prelu's initial (learned) slope; 0 <= slope < 1
    leaky_slope: float = rule(Number(0, 1, high_open=True), 0.01)
    # elu's saturation value for x -> -inf is -alpha; alpha > 0
    elu_alpha: float = rule(Number(low=0, low_open=True), 1.0)
    # maxout: linear pieces per unit (multiplies that layer's parameters by k); 2 <= k <= 16
    maxout_k: int = rule(Number(low=2, high=16, integer=True), 2)
    # a name in INITIALIZERS
    init: str = rule(OneOf(INITIALIZERS), "he")
    # std of the "normal" initializer ("small random numbers"); > 0
    init_std: float = rule(Number(low=0, low_open=True), 0.01)
    # value of the "constant" initializer
    init_constant: float = rule(Number(), 0.0)
    # between the affine layer and the activation, as the notes place it
    batchnorm: bool = rule(Flag(), False)
    # after each hidden activation; 0 <= dropout < 1
    dropout: float = rule(Number(0, 1, high_open=True), 0.0)
    # start from this saved model (finetuning); a study fixes it, never searches it
    checkpoint: str | None = rule(Text(path=True), None, searchable=False)
    # all | classifier | N (train only the last N layers); anything but all needs a checkpoint
    finetune: str | int = rule(Finetune(), "all", searchable=False)
