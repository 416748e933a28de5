"""Checkpoints and finetuning: start from a saved model and train all of it or only its end.

The notes' two regimes: with a small dataset, treat the network as a fixed feature extractor
and train only the classifier (``"classifier"``); with a medium one, finetune part of it (an
int N: the last N layers) or all of it (``"all"``). Layers are counted from the end: the
classifier is layer 1, the last hidden block layer 2, and so on.

A checkpoint is one ``torch.save`` file holding the model's ``state_dict`` (parameters and
batchnorm running statistics) with the config, input shape and class count that rebuild it.
Which parameters are frozen is not saved: a loaded model is fully trainable until
``apply_finetune`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from models._network import Network
from models.config import ModelConfig
from models.errors import ModelError
from models.fields import FINETUNE_MODES

__all__ = [
    "CheckpointMeta",
    "apply_finetune",
    "load_checkpoint",
    "load_pretrained",
    "save_checkpoint",
]

_FORMAT = 1  # bump when the payload's layout changes
_STRUCTURE = ("arch", "hidden", "activation", "batchnorm", "maxout_k")  # must match to load


@dataclass(frozen=True, kw_only=True)
class CheckpointMeta:
    """What a checkpoint says about the model in it."""

    path: str
    config: ModelConfig  # as saved; its own checkpoint/finetune fields record its provenance
    input_shape: tuple[int, ...]
    num_classes: int


def save_checkpoint(
    model: Network,
    path: str | os.PathLike[str],
    *,
    config: ModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
) -> None:
    """Write ``model``'s weights and running statistics with what rebuilds it; makes parent dirs."""
    payload = {
        "format": _FORMAT,
        "config": {
            f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
            for f in dataclasses.fields(config)
        },
        "input_shape": [int(d) for d in input_shape],
        "num_classes": int(num_classes),
        "state_dict": model.state_dict(),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], CheckpointMeta]:
    where = os.fspath(path)
    if not Path(where).is_file():
        raise ModelError(f"checkpoint {where}: no such file")
    try:
        # weights_only: a checkpoint may come from elsewhere; unpickling arbitrary objects would
        # run arbitrary code. The payload is plain containers and tensors.
        payload: Any = torch.load(where, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        # what torch.load raises for garbage, a truncated zip, or a pickle of foreign objects
        raise ModelError(f"checkpoint {where}: not readable as a torch checkpoint ({exc})") from exc
    if not (isinstance(payload, dict) and payload.get("format") == _FORMAT):
        raise ModelError(
            f"checkpoint {where}: not a model saved by models.save_checkpoint (format {_FORMAT})"
        )
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    fields = {k: v for k, v in payload["config"].items() if k in known}
    fields["hidden"] = tuple(fields.get("hidden", ()))
    meta = CheckpointMeta(
        path=where,
        config=ModelConfig(**fields),
        input_shape=tuple(payload["input_shape"]),
        num_classes=int(payload["num_classes"]),
    )
    return payload["state_dict"], meta


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Network, CheckpointMeta]:
    """The saved model, rebuilt and loaded, fully trainable, in train mode; and its metadata."""
    from models.factory import build_model  # factory imports this module

    state, meta = _read(path)
    config = dataclasses.replace(meta.config, checkpoint=None, finetune="all")
    model = build_model(config, input_shape=meta.input_shape, num_classes=meta.num_classes)
    model.load_state_dict(state)
    return model, meta


def load_pretrained(
    model: Network, path: str | os.PathLike[str], *, config: ModelConfig
) -> CheckpointMeta:
    """Copy a checkpoint's weights into ``model``, built from ``config``, in place.

    The structural fields (arch, hidden, activation, batchnorm, maxout_k) must equal the
    checkpoint's and every tensor's shape must match, else ModelError naming the checkpoint.
    The rest of the config (init, dropout, slopes, ...) may differ. When ``model`` has another
    number of classes than the checkpoint, its classifier keeps its fresh initialization: the
    usual transfer to a new label set.
    """
    state, meta = _read(path)
    differences = [
        f"{name}: checkpoint {getattr(meta.config, name)!r}, config {getattr(config, name)!r}"
        for name in _STRUCTURE
        if getattr(meta.config, name) != getattr(config, name)
        and not (name == "maxout_k" and config.activation != "maxout")
    ]
    if differences:
        raise ModelError(
            f"checkpoint {meta.path} has another architecture than the config: "
            + "; ".join(differences)
            + ". Set these fields to the checkpoint's values."
        )
    own = model.state_dict()
    if model.classifier.out_features != meta.num_classes:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        state.update({k: v for k, v in own.items() if k.startswith("classifier.")})
    mismatches = sorted(set(own) ^ set(state)) + [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if mismatches:
        raise ModelError(
            f"checkpoint {meta.path} does not fit the model built from the config "
            f"(input_shape {tuple(meta.input_shape)} when saved): " + "; ".join(mismatches[:5])
        )
    model.load_state_dict(state)
    return meta


def apply_finetune(model: Network, mode: str | int) -> list[str]:
    """Freeze all but the trained part of ``model``; return the trainable parameters' names.

    ``"all"``: train everything. ``"classifier"``: freeze ``model.features`` (fixed feature
    extractor). N >= 1: train the last N layers, the classifier counting as 1 and each hidden
    block as 1 (``"classifier"`` is N = 1). Frozen blocks are put in eval mode and stay there
    (``Network.train``): their batchnorm keeps its running statistics, their dropout is off.
    Build the optimizer from ``p for p in model.parameters() if p.requires_grad``.
    """
    layers = [*model.features, model.classifier]
    if mode == "all":
        n = len(layers)
    elif mode == "classifier":
        n = 1
    elif isinstance(mode, int) and not isinstance(mode, bool) and 1 <= mode <= len(layers):
        n = mode
    else:
        raise ModelError(
            f"finetune {mode!r}: expected one of {', '.join(FINETUNE_MODES)}, or an integer N "
            f"with 1 <= N <= {len(layers)} (this model has {len(layers) - 1} hidden blocks "
            "and a classifier)"
        )
    for i, layer in enumerate(layers):
        trainable = i >= len(layers) - n
        for p in layer.parameters():
            p.requires_grad_(trainable)
    model.train(model.training)  # re-applies eval mode to the blocks just frozen
    return [name for name, p in model.named_parameters() if p.requires_grad]
