"""``build_model``: a ModelConfig, an input shape and a class count in, an initialized network out.

Structure every model has (diagnostics and finetuning rely on it):

- ``model.features``: an ``nn.Sequential`` of hidden blocks, one per entry of ``config.hidden``
  (``model.blocks`` is the same as a typed ``list[Block]``).
- ``model.classifier``: the final ``nn.Linear`` producing the class scores (N, num_classes).
- Each hidden block has ``.linear`` (nn.Linear, or nn.Conv2d 3x3 in a convnet), ``.norm``
  (BatchNorm1d/2d, or nn.Identity without batchnorm), ``.act`` (the activation module, an
  ``ActivationModule``: ``models.activation`` builds the same),
  ``.pool`` (nn.MaxPool2d(2) in a convnet, nn.Identity in an mlp) and ``.drop`` (nn.Dropout, or
  nn.Identity when dropout is 0); forward order linear -> norm -> act -> pool -> drop. With
  batchnorm ``.linear`` has no bias (batchnorm's beta takes its place).
  The output of ``.norm`` (which is ``.linear``'s when norm is Identity) is the pre-activation;
  the output of ``.act`` is the activation.
- With maxout (k pieces) ``.linear`` and ``.norm`` are k times wider than the width the user
  wrote, and ``.act`` takes the max over the k pieces back to that width: piece p of unit j is
  channel ``p*H + j``. Batchnorm normalizes each piece: it sits between the affine layer and
  the activation, as the notes place it.
- ``model.stem`` / ``model.head`` hold no parameters: the mlp flattens its input (any shape),
  the convnet averages each channel over space before the classifier.

Initialization: hidden weights by ``config.init`` with the gain of the activation that follows
(``models.activations``), the classifier's weights by ``config.init`` with gain 1, all biases
zero, batchnorm gamma 1 and beta 0. Seeding is the caller's job: ``torch.manual_seed`` first.

With ``config.checkpoint`` set, the freshly built model then takes the checkpoint's weights and
running statistics (``models.finetune.load_pretrained``: the architecture must match, else a
ModelError naming the checkpoint), and ``config.finetune`` freezes what is not trained
(``models.finetune.apply_finetune``). When ``num_classes`` differs from the checkpoint's, the
classifier is not loaded but freshly initialized, the common transfer case.
"""

from __future__ import annotations

from models._network import Network
from models.config import ModelConfig
from models.errors import ModelError
from models.finetune import apply_finetune, load_pretrained
from models.registry import ARCHITECTURES
from models.validate import check_config

__all__ = ["build_model"]


def build_model(config: ModelConfig, *, input_shape: tuple[int, ...], num_classes: int) -> Network:
    """Build ``config.arch`` for inputs of shape (N, *input_shape) and ``num_classes`` classes.

    ``input_shape`` excludes the batch: ``(D,)`` for flat data, ``(C, H, W)`` for images.
    Raises UnknownNameError for an unknown arch/activation/init, ConfigError for other bad config
    values, ModelError for a bad shape, class count or checkpoint (all from ``models.errors``).
    The model is in train mode.
    """
    check_config(config)
    shape = tuple(input_shape)
    if not (
        shape and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    ):
        raise ModelError(
            f"input_shape must be positive integers without the batch, got {input_shape!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    model: Network = ARCHITECTURES.get(config.arch)(
        config, input_shape=shape, num_classes=num_classes
    )
    if config.checkpoint is not None:
        load_pretrained(model, config.checkpoint, config=config)
        apply_finetune(model, config.finetune)
    return model
