"""``convnet``: conv3x3-bn-act-maxpool2 blocks, global average pooling, a linear classifier."""

from __future__ import annotations

from torch import nn

from models._network import Network, new_block
from models.config import ModelConfig
from models.errors import ModelError
from models.init import init_affine
from models.normalization import batchnorm
from models.registry import ACTIVATIONS

__all__ = ["build_convnet"]


def build_convnet(cfg: ModelConfig, *, input_shape: tuple[int, ...], num_classes: int) -> Network:
    """(N, C, H, W) -> ``len(cfg.hidden)`` blocks -> (N, C_last) by averaging -> (N, num_classes).

    Block i is Conv2d(c, k*C_i, 3, padding=1) -> [BatchNorm2d(k*C_i)] -> act -> MaxPool2d(2)
    -> [Dropout], with C_i = cfg.hidden[i] channels and k the activation's pieces. Each block
    halves H and W (rounding down), so the input must be at least 2**len(hidden) on each side.
    Global average pooling, not flattening, feeds the classifier: it has C_last * num_classes
    weights whatever the image size, and a checkpoint transfers across image sizes.
    """
    if len(input_shape) != 3:
        raise ModelError(
            f"arch 'convnet' needs image data with a channel dimension, input_shape (C, H, W); "
            f"got {tuple(input_shape)}. Reshape the data to (C, H, W) or use arch 'mlp'."
        )
    channels, height, width_px = input_shape
    scale = 2 ** len(cfg.hidden)
    if height < scale or width_px < scale:
        raise ModelError(
            f"arch 'convnet' with {len(cfg.hidden)} blocks halves H and W {len(cfg.hidden)} times, "
            f"so it needs images of at least {scale}x{scale}; got {height}x{width_px}. "
            "Use fewer blocks (model.hidden) or larger images."
        )
    activation = ACTIVATIONS.get(cfg.activation)(cfg)
    blocks: list[nn.Module] = []
    c = channels
    for width in cfg.hidden:
        out = width * activation.pieces
        blocks.append(
            new_block(
                linear=nn.Conv2d(c, out, kernel_size=3, padding=1, bias=not cfg.batchnorm),
                width=width,
                activation=activation,
                cfg=cfg,
                norm=batchnorm(out, kind="2d") if cfg.batchnorm else nn.Identity(),
                pool=nn.MaxPool2d(2),
            )
        )
        c = width
    classifier = nn.Linear(c, num_classes)
    init_affine(classifier, cfg=cfg, gain=1.0)  # no activation follows the scores
    return Network(
        stem=nn.Identity(),
        features=nn.Sequential(*blocks),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),  # (N, C, h, w) -> (N, C)
        classifier=classifier,
    )
