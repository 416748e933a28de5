"""Datasets, stratified seeded splits, and the notes' preprocessing fitted on the training split.

Arrays stay NumPy here (the driver puts one ``Dataset`` into Ray's object store; trials turn it
into tensors). Images keep their channel dimension, ``(N, C, H, W)``, scaled to [0, 1]; the
mlp flattens them itself, the convnet uses them as they are.

Sources (``data.source``), one loader each in ``SOURCES``:

- ``digits``: scikit-learn's bundled 8x8 digits, ``(N, 1, 8, 8)``.
- ``mnist`` / ``fashion_mnist``: a folder with the standard IDX files (gzipped or not);
  ``train-*`` are the pool, ``t10k-*`` when present are the test split. ``(N, 1, 28, 28)``.
- ``cifar10``: the python batches folder (``data_batch_1..5``, ``test_batch``), its parent, or
  a folder holding ``cifar-10-python.tar.gz``. ``(N, 3, 32, 32)``.
- ``npz``: arrays ``x, y``; or ``x_train, y_train`` with optional ``x_val, y_val`` and
  ``x_test, y_test`` (kept as those splits). ``x`` is ``(N, D)``, ``(N, H, W)`` (gets a
  channel), ``(N, C, H, W)``, or ``(N, H, W, C)`` with C in {1, 3} (moved first); uint8 is
  scaled by 1/255.
- ``csv``: a header row, a target column (``data.target``, default ``target``), numeric
  features. Whole-number targets >= 0 are class indices; other targets are class names.

Class labels of every source are used as written (names are numbered in sorted order): at
least two classes, and an example of each of 0..K-1 (``check_classes``), checked as the data
loads, before anything of a study is started or written.
- ``python``: the user's ``data.loader``, called with ``{"seed": seed, **data.options}``; it
  returns arrays (``x_train, y_train`` and optional val/test splits, kept as those splits) or
  torch Datasets (``train`` and optional ``val``, ``test``; a ``TorchData``). See
  ``hpo.data._python``. Its float labels that are not whole numbers are regression targets
  (``num_classes`` 0): a user's ``trainable`` may fit them, hpo's built-in loop does not
  (``require_classification``).

``data.download: true`` fetches the standard files of mnist / fashion_mnist / cifar10 into
``data.path`` (default ``~/.cache/hpo/<source>``) unless they are there already; see
``hpo.data._download``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hpo.data import _files as files
from hpo.data._download import REMOTES, default_folder, fetch
from hpo.data._shuffle_split import shuffle_split, stratified_shuffle_split
from hpo.errors import DataError, UnknownNameError

if TYPE_CHECKING:  # hpo.data.config reads this module's SOURCES and STEPS for its rules
    from hpo.data._torch_data import RawDatasets, TorchData
    from hpo.data.config import DataSpec

__all__ = [
    "SOURCES",
    "STEPS",
    "Dataset",
    "Preprocessor",
    "RawData",
    "Step",
    "Source",
    "check_classes",
    "load_dataset",
    "load_raw",
    "require_classification",
    "split",
]

#: Rows per block when projecting onto principal axes (bounds float64 temporaries).
_CHUNK = 8192


# ----------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    """Split and preprocessed examples; ``x_*`` are float32, ``y_*`` int64 class indices, or
    float32 regression targets where ``num_classes`` is 0 (only a ``data.loader`` gives those).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int  # 0: y_* are regression targets
    preprocessor: Preprocessor
    name: str = "data"
    class_names: tuple[str, ...] = ()  # names of classes 0..K-1 where the source has them
    predefined: tuple[str, ...] = ()  # splits the data itself defined ("val", "test")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_classification(self) -> bool:
        """Class labels (what hpo's built-in loop trains on), not regression targets."""
        return self.num_classes > 0

    def summary(self) -> str:
        return _summary(self.name, (len(self.y_train), len(self.y_val), len(self.y_test)),
                        self.predefined, self.input_shape, self.num_classes)


def _summary(name: str, sizes: tuple[int, int, int], predefined: tuple[str, ...],
             input_shape: tuple[int, ...], num_classes: int) -> str:
    """One line for ``Dataset.summary`` and ``TorchData.summary``."""
    given = f" ({' and '.join(predefined)} as given by the data)" if predefined else ""
    labels = f"{num_classes} classes" if num_classes > 0 else "regression targets"
    return (f"{name}: {sizes[0]} train / {sizes[1]} val / {sizes[2]} test{given}, "
            f"input {input_shape}, {labels}")


def require_classification(data: Dataset | TorchData) -> None:
    """Raise a ``DataError`` unless ``data`` has class labels: hpo's built-in training loop
    (cross-entropy over classes 0..K-1) cannot train on regression targets."""
    if not data.is_classification:
        raise DataError(
            f"{data.name}: the labels are regression targets (floats that are not whole "
            f"numbers), but hpo's built-in training loop trains classifiers only. Return "
            f"integer class labels 0..K-1 from data.loader, or train your own way with "
            f"trainable: \"module:fit\" (it gets the data as trial.data)")


def check_classes(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Class labels are used as written, not renumbered: a classifier over ``num_classes``
    (largest label + 1, or the source's fixed classes) needs at least two of them, and an
    example of each. A ``DataError`` naming ``where`` otherwise (found as the data loads,
    before any trial: a single class or empty ones would otherwise fail a sanity check for
    the wrong reason, or train logits no example ever asks for)."""
    present = np.unique(labels)
    if len(present) < 2:
        raise DataError(f"{where}: every example has label {_few(present)}; a classifier needs "
                        f"at least 2 classes")
    empty = np.setdiff1d(np.arange(num_classes), present)
    if len(empty):
        raise DataError(
            f"{where}: class labels are used as written, as indices 0..K-1 (K = the largest + "
            f"1 = {num_classes}); these are {_few(present)}, so class(es) {_few(empty)} have no "
            f"example. Renumber the labels 0..{len(present) - 1} (a csv target column may "
            f"instead hold names, numbered in sorted order)")


def _few(values: np.ndarray, shown: int = 8) -> str:
    """``3, 5, 7`` or ``0, 1, ..., 9 (12 in all)``."""
    text = ", ".join(str(v) for v in values[:shown])
    return text if len(values) <= shown else f"{text}, ... ({len(values)} in all)"


@dataclass(frozen=True)
class RawData:
    """A source's examples as read (images in [0, 1]), before splitting and preprocessing."""

    name: str
    where: str  # the file or folder read: error messages name it
    num_classes: int  # 0: y holds regression targets (float32)
    x: np.ndarray  # (N, ...) float32: the pool that train (and val/test unless given) come from
    y: np.ndarray  # (N,) int64 class indices, or float32 regression targets
    val: tuple[np.ndarray, np.ndarray] | None = None  # a split the data defines, kept as is
    test: tuple[np.ndarray, np.ndarray] | None = None
    class_names: tuple[str, ...] = ()


def _every_label(raw: RawData) -> np.ndarray:
    """The labels of the pool and of the splits the data defines."""
    given = [split[1] for split in (raw.val, raw.test) if split is not None]
    return np.concatenate([raw.y, *given]) if given else raw.y


# ----------------------------------------------------------------------------- preprocessing


class Step(ABC):
    """One preprocessing step: statistics fitted on the training split, then applied to any."""

    @abstractmethod
    def fit(self, x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
        """Statistics of the training examples ``x`` (N, ...)."""

    @abstractmethod
    def apply(self, x: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        """``x`` transformed with fitted ``state``, as float32."""


class ZeroCenter(Step):
    """Subtract the mean image (AlexNet): one mean per pixel and channel."""

    def fit(self, x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
        return {"mean": x.mean(axis=0, dtype=np.float64).astype(np.float32)}  # x.shape[1:]

    def apply(self, x: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        return (x - state["mean"]).astype(np.float32, copy=False)


class PerChannelMean(ZeroCenter):
    """Subtract one mean per channel (VGGNet); needs images (N, C, H, W)."""

    def fit(self, x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
        if x.ndim != 4:
            raise DataError(f"per_channel_mean needs images (N, C, H, W); these examples have "
                            f"shape {x.shape[1:]}. Use zero_center for flat features")
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)  # (C,)
        return {"mean": mean.astype(np.float32)[:, None, None]}  # (C, 1, 1)


class Normalize(Step):
    """Divide each feature by its standard deviation."""

    def fit(self, x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
        mean = x.mean(axis=0, dtype=np.float64)
        squares = np.zeros(x.shape[1:])
        for i in range(0, len(x), _CHUNK):  # blockwise: no float64 copy of all of x
            squares += ((x[i:i + _CHUNK] - mean) ** 2).sum(axis=0)
        std = np.sqrt(squares / max(len(x), 1))
        # A feature constant on the training split (a digit's empty corner) keeps its scale:
        # dividing by ~0 would blow up the few val/test examples where it is not constant.
        return {"std": np.where(std < eps, 1.0, std).astype(np.float32)}

    def apply(self, x: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        return (x / state["std"]).astype(np.float32, copy=False)


class PCA(Step):
    """Rotate onto the principal axes of the training data: diagonal covariance.

    The output is flat, (N, K), axes by decreasing variance. Directions in which the training
    examples do not vary at all (numerically zero variance: a pixel that is always 0) are
    dropped, so K <= min(N, D): they carry nothing a model could learn.
    """

    whiten = False

    def fit(self, x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
        flat = _flat(x)  # (N, D)
        n, d = flat.shape
        mean = flat.mean(axis=0, dtype=np.float64)  # (D,)
        if n < d:  # fewer examples than features: the SVD of the data is the cheaper route
            _, s, vt = np.linalg.svd(flat.astype(np.float64) - mean, full_matrices=False)
            variance, axes = s**2 / n, vt.T  # (K,), (D, K)
        else:
            cov = np.zeros((d, d))
            for i in range(0, n, _CHUNK):
                c = flat[i:i + _CHUNK].astype(np.float64) - mean  # (B, D)
                cov += c.T @ c
            variance, axes = np.linalg.eigh(cov / n)
            variance, axes = variance[::-1], axes[:, ::-1]
        keep = variance > max(variance.max(), 0.0) * max(n, d) * np.finfo(np.float64).eps
        if self.whiten:  # see Whiten: below eps x the largest variance is noise
            keep &= variance > eps * variance.max()
        if not keep.any():
            raise DataError("pca/whiten: every training example is the same; nothing to "
                            "decorrelate")
        variance, axes = variance[keep], axes[:, keep]
        # An axis and its negation are equally principal: fix the sign so that a refit on
        # another machine gives the same features (largest entry of each axis positive).
        signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
        axes = axes * signs
        state = {"mean": mean.astype(np.float32), "components": axes.astype(np.float32),
                 "variance": variance.astype(np.float32)}
        if self.whiten:
            state["scale"] = np.sqrt(variance).astype(np.float32)
        return state

    def apply(self, x: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        flat = _flat(x)
        mean = state["mean"].astype(np.float64)
        axes = state["components"].astype(np.float64)
        scale = state["scale"].astype(np.float64) if "scale" in state else None
        out = np.empty((len(x), axes.shape[1]), dtype=np.float32)  # (N, K)
        for i in range(0, len(x), _CHUNK):
            z = (flat[i:i + _CHUNK].astype(np.float64) - mean) @ axes
            out[i:i + _CHUNK] = z if scale is None else z / scale
        return out


class Whiten(PCA):
    """PCA, then each axis divided by its standard deviation: identity covariance.

    Axes whose training variance is below ``eps`` times the largest are dropped as well:
    scaling them to unit variance would blow their noise up by more than 1/sqrt(eps) (the
    usual ``sqrt(variance + eps)`` would avoid that too, but leave them below unit variance).
    """

    whiten = True


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), math.prod(x.shape[1:]))  # (N, D), also for N = 0


#: The notes' preprocessing steps by name: the names ``data.preprocess`` accepts (``DataSpec``).
STEPS: dict[str, Step] = {
    "zero_center": ZeroCenter(),
    "per_channel_mean": PerChannelMean(),
    "normalize": Normalize(),
    "pca": PCA(),
    "whiten": Whiten(),
}


def _step(name: str) -> Step:
    if name not in STEPS:
        raise UnknownNameError("preprocessing step", name, list(STEPS))
    return STEPS[name]


@dataclass
class Preprocessor:
    """The notes' preprocessing steps, applied in order; fitted state ends with ``_``.

    zero_center subtracts the mean image (AlexNet); per_channel_mean one mean per channel (VGG);
    normalize divides by the per-feature std; pca rotates onto the principal axes (diagonal
    covariance); whiten also scales each axis to unit variance (identity covariance).

    Fit on the training split only, then ``transform`` val, test and, at inference, new
    examples shaped like the training ones (as the source loads them: images in [0, 1]).
    ``state_dict`` / ``from_state_dict`` and ``save`` / ``load`` carry the fitted statistics
    to the model they belong to.
    """

    steps: tuple[str, ...]
    # normalize leaves a feature whose std is below eps unscaled; whiten drops the axes whose
    # variance is below eps x the largest.
    eps: float = 1e-5
    state_: list[dict[str, np.ndarray]] = field(default_factory=list)
    input_shape_: tuple[int, ...] | None = None  # one example's shape as fitted

    def __post_init__(self) -> None:
        self.steps = tuple(self.steps)
        for name in self.steps:
            _step(name)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        self.state_ = []
        self.input_shape_ = tuple(x.shape[1:])
        x = np.asarray(x, dtype=np.float32)
        for name in self.steps:
            step = _step(name)
            state = step.fit(x, self.eps)
            self.state_.append(state)
            x = step.apply(x, state)
        return x

    def transform(self, x: np.ndarray) -> np.ndarray:
        if len(self.state_) != len(self.steps) or self.input_shape_ is None:
            raise RuntimeError("Preprocessor.transform before fit_transform")
        if tuple(x.shape[1:]) != self.input_shape_:
            raise DataError(f"examples of shape {tuple(x.shape[1:])}, but the preprocessing was "
                            f"fitted on {self.input_shape_}")
        x = np.asarray(x, dtype=np.float32)
        for name, state in zip(self.steps, self.state_, strict=True):
            x = _step(name).apply(x, state)
        return x

    # -- persistence: plain data and arrays, no pickle

    def state_dict(self) -> dict[str, Any]:
        """Everything ``from_state_dict`` needs: names, eps, shape, and the fitted arrays."""
        fitted = self.input_shape_ is not None
        arrays = {f"{i}.{name}.{key}": value
                  for i, (name, state) in enumerate(zip(self.steps, self.state_, strict=True))
                  for key, value in state.items()} if fitted else {}
        shape = list(self.input_shape_) if fitted else None
        return {"steps": list(self.steps), "eps": float(self.eps), "input_shape": shape,
                "arrays": arrays}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Preprocessor:
        steps = tuple(str(s) for s in state["steps"])
        fitted: list[dict[str, np.ndarray]] = [{} for _ in steps]
        for key, value in state["arrays"].items():
            index, name, array_name = key.split(".", 2)
            if steps[int(index)] != name:
                raise ValueError(f"state array {key!r} does not match step {int(index)} "
                                 f"({steps[int(index)]!r})")
            fitted[int(index)][array_name] = np.asarray(value)
        shape = state.get("input_shape")
        pre = cls(steps, eps=float(state["eps"]))
        if shape is not None:
            pre.state_, pre.input_shape_ = fitted, tuple(int(d) for d in shape)
        return pre

    def save(self, path: str | Path) -> None:
        """Write the fitted state to ``path`` as an .npz of plain arrays."""
        state = self.state_dict()
        with open(path, "wb") as f:
            np.savez(
                f,
                steps=np.asarray(state["steps"], dtype=str),
                eps=np.asarray(state["eps"]),
                input_shape=np.asarray(state["input_shape"] or [], dtype=np.int64),
                fitted=np.asarray(state["input_shape"] is not None),
                **{f"state.{k}": v for k, v in state["arrays"].items()},
            )

    @classmethod
    def load(cls, path: str | Path) -> Preprocessor:
        with np.load(path, allow_pickle=False) as f:
            return cls.from_state_dict({
                "steps": [str(s) for s in f["steps"]],
                "eps": float(f["eps"]),
                "input_shape": [int(d) for d in f["input_shape"]] if bool(f["fitted"]) else None,
                "arrays": {k.removeprefix("state."): f[k] for k in f.files
                           if k.startswith("state.")},
            })


# ----------------------------------------------------------------------------- splits


def split(
    y: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int, where: str = "data",
    stratify: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded index split into train / val / test (a fraction 0 gives none), stratified by the
    class labels ``y`` unless ``stratify`` is False (regression targets): scikit-learn's
    ``train_test_split``, test split first, then validation from the rest."""
    index = np.arange(len(y))
    empty = np.array([], dtype=np.int64)
    test = val = empty
    if not stratify:
        try:
            if test_fraction > 0:
                index, test = shuffle_split(index, test_fraction, seed)
            if val_fraction > 0:
                index, val = shuffle_split(index, val_fraction / (1.0 - test_fraction), seed)
        except ValueError as exc:  # a split with no example left
            raise DataError(f"{where}: cannot split {len(y)} examples (val_fraction "
                            f"{val_fraction:g}, test_fraction {test_fraction:g}): {exc}. Bring "
                            f"more examples") from None
        return np.sort(index), np.sort(val), np.sort(test)
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < 2:
        raise DataError(f"{where}: class {classes[counts.argmin()]} has {counts.min()} "
                        f"example(s); a stratified split needs at least 2 per class")
    try:
        if test_fraction > 0:
            index, test = stratified_shuffle_split(index, y, test_fraction, seed)
        if val_fraction > 0:
            val_share = val_fraction / (1.0 - test_fraction)
            index, val = stratified_shuffle_split(index, y[index], val_share, seed)
    except ValueError as exc:  # a split smaller than the number of classes
        raise DataError(f"{where}: cannot split {len(y)} examples of {len(classes)} classes "
                        f"stratified (val_fraction {val_fraction:g}, test_fraction "
                        f"{test_fraction:g}): {exc}. Raise the fractions or bring more "
                        f"examples") from None
    return np.sort(index), np.sort(val), np.sort(test)


# ----------------------------------------------------------------------------- sources


def _folder(spec: DataSpec) -> Path:
    if spec.path is not None:
        return Path(spec.path)
    if spec.download:
        return default_folder(spec.source)
    raise DataError(f"data.source {spec.source!r} reads files: set data.path")


def _images(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    out = x.astype(np.float32)
    out /= 255.0
    return out


def _load_digits(spec: DataSpec) -> RawData:
    table = _digits_table()  # 64 pixels in 0..16, then the digit
    x = (table[:, :-1].reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)  # (N, 1, 8, 8)
    return RawData(name="digits", where="digits", num_classes=10, x=x,
                   y=table[:, -1].astype(np.int64), class_names=tuple(map(str, range(10))))


def _digits_table() -> np.ndarray:
    """The file ``sklearn.datasets.load_digits`` reads, read as it does, without importing
    scikit-learn (1.3 s of CPU on the way to the first trial)."""
    import gzip
    from importlib.util import find_spec

    package = find_spec("sklearn")  # finds the package without running it
    if package is None or package.origin is None:
        raise DataError("data.source 'digits' reads scikit-learn's bundled digits: install "
                        "scikit-learn")
    path = Path(package.origin).parent / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        return np.loadtxt(f, delimiter=",")


_CLASS_NAMES = {
    "mnist": tuple(map(str, range(10))),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
}


def _load_idx(spec: DataSpec) -> RawData:
    source = spec.source
    folder = _folder(spec)
    if folder.is_file():
        raise DataError(f"{folder}: {source} reads a folder holding the IDX files, not a file")
    stems = {(s, k): files.idx_name(s, k) for s in ("train", "t10k") for k in ("images", "labels")}
    if spec.download:
        missing = [name for name in REMOTES[source].files
                   if files.find_idx(folder, name.removesuffix(".gz")) is None]
        fetch(source, folder, missing, url=spec.url, checksums=spec.checksums)
    found = {key: files.find_idx(folder, stem) for key, stem in stems.items()}
    for kind in ("images", "labels"):
        if found["train", kind] is None:
            raise DataError(
                f"{folder}: no {stems['train', kind]}[.gz]; {source} reads the standard IDX "
                f"files {', '.join(stems.values())} (gzipped or not; the t10k pair is the "
                f"optional test split). Put them there, or set data.download: true")
    if (found["t10k", "images"] is None) != (found["t10k", "labels"] is None):
        have, lack = (("images", "labels") if found["t10k", "images"] else ("labels", "images"))
        raise DataError(f"{found['t10k', have]}: found without {stems['t10k', lack]}[.gz]; "
                        f"the test split needs both files")
    x, y = files.read_idx_pair(folder, "train", num_classes=10)
    test = None
    if found["t10k", "images"] is not None:
        x_test, y_test = files.read_idx_pair(folder, "t10k", num_classes=10)
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{found['t10k', 'images']}: images of {x_test.shape[2:]} pixels, "
                            f"the training images have {x.shape[2:]}")
        test = (_images(x_test), y_test)
    return RawData(name=source, where=str(folder), num_classes=10, x=_images(x), y=y, test=test,
                   class_names=_CLASS_NAMES[source])


def _load_cifar10(spec: DataSpec) -> RawData:
    root = _folder(spec)
    if root.is_file():
        raise DataError(f"{root}: cifar10 reads a folder (the python batches, their parent, or "
                        f"one holding {files.CIFAR_ARCHIVE}), not a file")
    folder = files.cifar_folder(root)
    if folder is None:
        archive = root / files.CIFAR_ARCHIVE
        if not archive.is_file() and spec.download:
            fetch("cifar10", root, [files.CIFAR_ARCHIVE], url=spec.url, checksums=spec.checksums)
        if not archive.is_file():
            raise DataError(
                f"{root}: no CIFAR-10 python batches ({', '.join(files.CIFAR_TRAIN)}, "
                f"test_batch) here or in {files.CIFAR_FOLDER}/, and no {files.CIFAR_ARCHIVE}. "
                f"Put them there, or set data.download: true")
        folder = files.extract_cifar(archive, root)
    missing = [b for b in files.CIFAR_TRAIN if not (folder / b).is_file()]
    if missing:
        raise DataError(f"{folder}: no {', '.join(missing)}; the CIFAR-10 python version has "
                        f"{', '.join(files.CIFAR_TRAIN)} and test_batch")
    parts = [files.read_cifar_batch(folder / b, num_classes=10) for b in files.CIFAR_TRAIN]
    x = _images(np.concatenate([p[0] for p in parts]))  # (N, 3, 32, 32)
    y = np.concatenate([p[1] for p in parts])
    test = None
    if (folder / "test_batch").is_file():
        x_test, y_test = files.read_cifar_batch(folder / "test_batch", num_classes=10)
        test = (_images(x_test), y_test)
    return RawData(name="cifar10", where=str(folder), num_classes=10, x=x, y=y, test=test,
                   class_names=_CLASS_NAMES["cifar10"])


def _npz_examples(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # (N, H, W): one channel
        x = x[:, None, :, :]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.moveaxis(x, -1, 1)  # (N, H, W, C) -> (N, C, H, W)
    if x.dtype == np.uint8:
        return _images(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _load_npz(spec: DataSpec) -> RawData:
    path = Path(spec.path or "")
    if not path.is_file():
        raise DataError(f"{path}: npz reads one .npz file; this is not a file")
    parts = files.read_npz(path)
    pool = parts["all"] if "all" in parts else parts["train"]
    num_classes = int(max(int(y.max()) for _, y in parts.values() if len(y))) + 1
    given = {s: (_npz_examples(x), y) for s, (x, y) in parts.items() if s in ("val", "test")}
    return RawData(name=path.stem, where=str(path), num_classes=num_classes,
                   x=_npz_examples(pool[0]), y=pool[1], val=given.get("val"),
                   test=given.get("test"))


def _load_csv(spec: DataSpec) -> RawData:
    path = Path(spec.path or "")
    if not path.is_file():
        raise DataError(f"{path}: csv reads one .csv file; this is not a file")
    x, y, names = files.read_csv(path, spec.target or "target")
    num_classes = len(names) if names else int(y.max()) + 1
    return RawData(name=path.stem, where=str(path), num_classes=num_classes, x=x, y=y,
                   class_names=names)


def _load_python(spec: DataSpec, *, seed: int, folder: Path | None) -> RawData | RawDatasets:
    from hpo.data._python import load_python  # imports the user's code: only when asked to

    return load_python(spec, seed=seed, folder=folder)


class Source(Protocol):
    """A ``data.source``: the data section, the study's seed and the study file's folder ->
    the examples as read, before splitting and preprocessing."""

    def __call__(self, spec: DataSpec, *, seed: int,
                 folder: Path | None) -> RawData | RawDatasets: ...


def _builtin(load: Callable[[DataSpec], RawData]) -> Source:
    """A built-in source: ``data:`` alone says what it reads (the seed splits it later)."""

    def source(spec: DataSpec, *, seed: int, folder: Path | None) -> RawData:
        return load(spec)

    source.__name__ = source.__qualname__ = load.__name__
    source.__doc__ = load.__doc__
    return source


#: One loader per ``data.source``: the names it accepts (``DataSpec``).
SOURCES: dict[str, Source] = {
    "digits": _builtin(_load_digits),
    "mnist": _builtin(_load_idx),
    "fashion_mnist": _builtin(_load_idx),
    "cifar10": _builtin(_load_cifar10),
    "npz": _builtin(_load_npz),
    "csv": _builtin(_load_csv),
    "python": _load_python,
}


def load_raw(spec: DataSpec, *, seed: int = 0,
             folder: str | Path | None = None) -> RawData | RawDatasets:
    """All examples of the source, checked; images in [0, 1]. ``seed`` and ``folder`` (the
    study file's, where ``data.loader``'s module is looked up first) matter to the python
    source only, whose loader may also return torch Datasets (``RawDatasets``)."""
    if spec.source not in SOURCES:
        raise UnknownNameError("data.source", spec.source, list(SOURCES))
    return SOURCES[spec.source](spec, seed=seed,
                                folder=Path(folder) if folder is not None else None)


def load_dataset(spec: DataSpec, *, seed: int,
                 folder: str | Path | None = None) -> Dataset | TorchData:
    """Load, split (seeded; stratified for class labels) and preprocess (fitted on train only).

    A split the data defines (npz ``x_val``/``x_test``, IDX ``t10k``, cifar ``test_batch``, a
    loader's ``x_val``/``val``) is kept and its fraction ignored; the others come from the pool
    by their fractions. ``folder`` is the study file's: ``data.loader`` is looked up there
    first. A loader that returns torch Datasets gives a ``TorchData`` (no preprocessing: a
    Dataset transforms its own items).
    """
    raw = load_raw(spec, seed=seed, folder=folder)
    if not isinstance(raw, RawData):
        from hpo.data._torch_data import split_datasets

        if spec.preprocess:
            raise DataError(
                f"{raw.where} returned torch Datasets, but data.preprocess "
                f"({', '.join(spec.preprocess)}) applies to arrays only. Set data.preprocess: "
                f"[] (the default is [zero_center]) and transform the examples in the Dataset "
                f"itself, or return arrays (x_train, y_train, ...)")
        return split_datasets(raw, val_fraction=spec.val_fraction,
                              test_fraction=spec.test_fraction, seed=seed)
    classes = raw.num_classes > 0
    if classes:  # before the split: its errors would name the wrong cause
        check_classes(_every_label(raw), raw.num_classes, raw.where)
    if classes and len(raw.y) < 2 * raw.num_classes:
        raise DataError(f"{raw.where}: {len(raw.y)} examples for {raw.num_classes} classes; "
                        f"at least classes x 2 = {2 * raw.num_classes} are needed")
    train, val, test = split(raw.y,
                             val_fraction=0.0 if raw.val is not None else spec.val_fraction,
                             test_fraction=0.0 if raw.test is not None else spec.test_fraction,
                             seed=seed, where=raw.where, stratify=classes)
    x_val, y_val = raw.val if raw.val is not None else (raw.x[val], raw.y[val])
    x_test, y_test = raw.test if raw.test is not None else (raw.x[test], raw.y[test])
    x_train = raw.x if len(train) == len(raw.y) else raw.x[train]
    pre = Preprocessor(tuple(spec.preprocess))
    try:
        x_train = pre.fit_transform(x_train)
    except DataError as exc:  # e.g. per_channel_mean on flat npz features: name the file
        raise DataError(f"{raw.where}: {exc}") from None
    return Dataset(
        x_train=np.ascontiguousarray(x_train),
        y_train=raw.y[train],
        x_val=np.ascontiguousarray(pre.transform(x_val)),
        y_val=y_val,
        x_test=np.ascontiguousarray(pre.transform(x_test)),
        y_test=y_test,
        num_classes=raw.num_classes,
        preprocessor=pre,
        name=raw.name,
        class_names=raw.class_names,
        predefined=tuple(s for s in ("val", "test") if getattr(raw, s) is not None),
    )
