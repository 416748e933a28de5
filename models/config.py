"""The model factory's input: every structural and initialization choice, torch-free."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    arch: str = "mlp"  # a name in ARCHITECTURES: mlp | convnet
    hidden: tuple[int, ...] = (128, 128)  # mlp: layer widths; convnet: channels per block
    activation: str = "relu"  # a name in ACTIVATIONS
    leaky_slope: float = 0.01  # leaky_relu's negative slope; prelu's initial (learned) slope
    elu_alpha: float = 1.0  # elu's saturation value for x -> -inf is -alpha
    maxout_k: int = 2  # maxout: linear pieces per unit (multiplies that layer's parameters by k)
    init: str = "he"  # a name in INITIALIZERS
    init_std: float = 0.01  # std of the "normal" initializer ("small random numbers")
    init_constant: float = 0.0  # value of the "constant" initializer
    batchnorm: bool = False  # between the affine layer and the activation, as the notes place it
    dropout: float = 0.0  # after each hidden activation; 0 <= dropout < 1
    checkpoint: str | None = None  # start from this saved model (finetuning)
    finetune: str | int = "all"  # all | classifier | N (train only the last N layers)
