"""Datasets, stratified seeded splits, and the notes' preprocessing fitted on the training split.

Arrays stay NumPy here (the driver puts one ``Dataset`` into Ray's object store; trials turn it
into tensors). Images keep their channel dimension, ``(N, C, H, W)``; the mlp flattens them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpo.errors import DataError
from hpo.spec import DataSpec

__all__ = ["Dataset", "Preprocessor", "load_dataset", "split"]


@dataclass(frozen=True)
class Dataset:
    """Split and preprocessed examples; ``x_*`` are float32, ``y_*`` int64 class indices."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    preprocessor: Preprocessor
    name: str = "data"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> str:
        return (f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} val / "
                f"{len(self.y_test)} test, input {self.input_shape}, {self.num_classes} classes")


@dataclass
class Preprocessor:
    """The notes' preprocessing steps, applied in order; fitted state ends with ``_``.

    zero_center subtracts the mean image (AlexNet); per_channel_mean one mean per channel (VGG);
    normalize divides by the per-feature std; pca rotates onto the principal axes (diagonal
    covariance); whiten also scales each axis to unit variance (identity covariance).
    """

    steps: tuple[str, ...]
    eps: float = 1e-5
    state_: list[dict[str, np.ndarray]] = field(default_factory=list)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        self.state_ = []
        for step in self.steps:
            state = _FIT[step](x, self.eps)
            self.state_.append(state)
            x = _APPLY[step](x, state)
        return x

    def transform(self, x: np.ndarray) -> np.ndarray:
        if len(self.state_) != len(self.steps):
            raise RuntimeError("Preprocessor.transform before fit_transform")
        for step, state in zip(self.steps, self.state_):
            x = _APPLY[step](x, state)
        return x

    def state_dict(self) -> dict[str, Any]:
        arrays = {f"{i}_{step}_{k}": v for i, (step, s) in enumerate(zip(self.steps, self.state_))
                  for k, v in s.items()}
        return {"steps": list(self.steps), "eps": self.eps, "arrays": arrays}


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def _fit_mean(x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    return {"mean": x.mean(axis=0)}


def _fit_channel_mean(x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    if x.ndim != 4:
        raise DataError(f"per_channel_mean needs images (N, C, H, W); these examples have shape "
                        f"{x.shape[1:]}")
    return {"mean": x.mean(axis=(0, 2, 3), keepdims=True)[0]}  # (C, 1, 1)


def _fit_std(x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    std = x.std(axis=0)
    # A feature constant on the training split (a digit's empty corner) keeps its scale:
    # dividing by ~0 would blow up the few val/test examples where it is not constant.
    return {"std": np.where(std < eps, 1.0, std).astype(np.float32)}


def _fit_pca(x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    flat = _flat(x).astype(np.float64)
    mean = flat.mean(axis=0)
    cov = np.cov(flat - mean, rowvar=False, bias=True)  # (D, D)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    return {"mean": mean, "components": eigvec[:, order], "variance": eigval[order]}


def _apply_pca(x: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
    return ((_flat(x) - s["mean"]) @ s["components"]).astype(np.float32)  # (N, D)


def _apply_whiten(x: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
    return (_apply_pca(x, s) / np.sqrt(s["variance"] + s["eps"])).astype(np.float32)


def _fit_whiten(x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    return {**_fit_pca(x, eps), "eps": np.asarray(eps)}


_FIT = {
    "zero_center": _fit_mean,
    "per_channel_mean": _fit_channel_mean,
    "normalize": _fit_std,
    "pca": _fit_pca,
    "whiten": _fit_whiten,
}
_APPLY = {
    "zero_center": lambda x, s: (x - s["mean"]).astype(np.float32),
    "per_channel_mean": lambda x, s: (x - s["mean"]).astype(np.float32),
    "normalize": lambda x, s: (x / s["std"]).astype(np.float32),
    "pca": _apply_pca,
    "whiten": _apply_whiten,
}


def split(
    y: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded index split into train / val / test."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < 2:
        raise DataError(f"class {classes[counts.argmin()]} has {counts.min()} example(s); "
                        f"a stratified split needs at least 2 per class")
    test = np.array([], dtype=np.int64)
    if test_fraction > 0:
        index, test = train_test_split(index, test_size=test_fraction, stratify=y,
                                       random_state=seed)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(index, test_size=val_share, stratify=y[index],
                                  random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def load_raw(spec: DataSpec) -> tuple[np.ndarray, np.ndarray, str]:
    """All examples of the source as (x float32, y int64, name); images in [0, 1]."""
    if spec.source == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.images[:, None, :, :] / 16.0).astype(np.float32)  # (N, 1, 8, 8)
        return x, bunch.target.astype(np.int64), "digits"
    raise DataError(f"data.source {spec.source!r} is not supported by this build; "
                    f"supported: digits")


def load_dataset(spec: DataSpec, *, seed: int) -> Dataset:
    """Load, split (stratified, seeded) and preprocess (fitted on train only)."""
    x, y, name = load_raw(spec)
    num_classes = int(y.max()) + 1
    if len(y) < 2 * num_classes:
        raise DataError(f"{name}: {len(y)} examples for {num_classes} classes; "
                        f"at least classes x 2 = {2 * num_classes} are needed")
    train, val, test = split(y, val_fraction=spec.val_fraction,
                             test_fraction=spec.test_fraction, seed=seed)
    pre = Preprocessor(tuple(spec.preprocess))
    x_train = pre.fit_transform(x[train])
    return Dataset(
        x_train=np.ascontiguousarray(x_train),
        y_train=y[train],
        x_val=np.ascontiguousarray(pre.transform(x[val])),
        y_val=y[val],
        x_test=np.ascontiguousarray(pre.transform(x[test])),
        y_test=y[test],
        num_classes=num_classes,
        preprocessor=pre,
        name=name,
    )
