"""The module structure every architecture shares (documented in ``models.factory``)."""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from models.activations import Activation
from models.config import ModelConfig
from models.init import init_affine

__all__ = ["Block", "Network", "new_block"]


class Block(nn.Module):
    """One hidden layer: linear -> norm -> act -> pool -> drop.

    ``linear`` is an nn.Linear or nn.Conv2d with ``pieces * width`` outputs (maxout: k pieces per
    unit); ``norm`` is BatchNorm over those outputs or nn.Identity; ``act`` maps them to ``width``
    units; ``pool`` is nn.MaxPool2d in a convnet, nn.Identity in an mlp; ``drop`` is nn.Dropout
    or nn.Identity. Dropout comes after pooling so that a dropped zero is not simply out-maxed.
    """

    def __init__(
        self,
        *,
        linear: nn.Linear | nn.Conv2d,
        norm: nn.Module,
        act: nn.Module,
        drop: nn.Module,
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.linear = linear
        self.norm = norm
        self.act = act
        self.pool = pool if pool is not None else nn.Identity()
        self.drop = drop

    def forward(self, x: Tensor) -> Tensor:
        z = self.norm(self.linear(x))  # pre-activation: (N, k*H) or (N, k*C, H, W)
        h: Tensor = self.drop(self.pool(self.act(z)))  # (N, H) or (N, C, H/2, W/2)
        return h


class Network(nn.Module):
    """stem -> features (hidden Blocks) -> head -> classifier.

    ``stem`` and ``head`` hold no parameters: the mlp's stem flattens the input, the convnet's
    head averages each channel over space. A block whose parameters are all frozen
    (``requires_grad=False``, see ``models.finetune.apply_finetune``) stays in eval mode whatever
    ``train()`` is called with: its batchnorm keeps the running statistics it was trained with
    and its dropout is off, so a frozen block is a fixed function.
    """

    def __init__(
        self, *, stem: nn.Module, features: nn.Sequential, head: nn.Module, classifier: nn.Linear
    ) -> None:
        super().__init__()
        self.stem = stem
        self.features = features
        self.head = head
        self.classifier = classifier

    @property
    def blocks(self) -> list[Block]:
        """``features`` as a typed list: ``model.blocks[i].linear`` type-checks."""
        return [cast(Block, block) for block in self.features]

    def forward(self, x: Tensor) -> Tensor:
        scores: Tensor = self.classifier(self.head(self.features(self.stem(x))))
        return scores  # (N, num_classes)

    def train(self, mode: bool = True) -> Network:
        super().train(mode)
        for block in self.features:
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        return self


def new_block(
    *,
    linear: nn.Linear | nn.Conv2d,
    width: int,
    activation: Activation,
    cfg: ModelConfig,
    norm: nn.Module,
    pool: nn.Module | None = None,
) -> Block:
    init_affine(linear, cfg=cfg, gain=activation.gain)
    return Block(
        linear=linear,
        norm=norm,
        act=activation.module(width),
        drop=nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity(),
        pool=pool,
    )
