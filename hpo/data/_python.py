"""``data.source: python``: the user's ``data.loader``, called, and what it returns checked.

``load(config)`` gets ``{"seed": <study seed>, **data.options}`` (an ``options.seed`` replaces
the study's) and returns a dict, one of two kinds:

- arrays (NumPy arrays, torch tensors or nested lists): ``x_train, y_train`` and optionally
  ``x_val, y_val`` and ``x_test, y_test``, kept as those splits. ``x`` is ``(N, ...)`` with at
  least one feature dimension, numeric and finite, and keeps its shape (a convnet wants
  ``(N, C, H, W)``); ``y`` is ``(N,)``. -> ``RawData``, split and preprocessed as for the
  built-in sources.
- torch map-style Datasets, for data that does not fit in memory: ``train`` and optionally
  ``val``, ``test``; item ``i`` is ``(x, y)``. -> ``RawDatasets``, which
  ``hpo.data._torch_data`` splits into a ``TorchData``.

Labels, the same rule for both kinds: whole numbers >= 0 (integers, or floats such as 1.0) are
class indices and ``num_classes`` is the largest label + 1 over every split, as for npz files;
floats that are otherwise (0.37, -2.0) are regression targets (``num_classes`` 0). Negative
integers are neither: an error. Class indices are used as written: at least two classes, and
each of 0..K-1 with an example (``hpo.data.dataset.check_classes``).

Every problem is a ``DataError`` naming ``data.loader``, the function and what is wrong.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.data._torch_data import DATASET_KEYS, RawDatasets
from hpo.data.dataset import RawData, check_classes
from hpo.errors import DataError

if TYPE_CHECKING:
    from hpo.data.config import DataSpec

__all__ = ["ARRAY_KEYS", "as_array", "classes_of", "load_python"]

#: What a loader of arrays returns: the training split, and the optional val and test splits.
ARRAY_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_SPLITS = ("train", "val", "test")
_RETURNS = ("x_train, y_train and optionally x_val, y_val, x_test, y_test (arrays or tensors), "
            "or train and optionally val, test (torch Datasets)")


def load_python(spec: DataSpec, *, seed: int, folder: Path | None) -> RawData | RawDatasets:
    """Import ``data.loader``, call it with its config, and check what it returns."""
    from hpo.usercode import CodeRef, load

    if spec.loader is None:
        raise DataError("data.source python needs data.loader: \"module:function\"")
    fn = load(spec.loader, field="data.loader", folder=folder)  # UserCodeError
    ref = str(CodeRef.parse(spec.loader))
    where = f"data.loader {ref}"
    try:
        out = fn({"seed": seed, **spec.options})
    except Exception as exc:  # noqa: BLE001 - the user's code: say what it raised, and where
        raise DataError(f"{where}: raised {_raised(exc)}") from exc
    if not isinstance(out, Mapping):
        raise DataError(f"{where}: returned {type(out).__name__}, not a dict; return "
                        f"{_RETURNS}")
    out = {k: v for k, v in out.items() if v is not None}  # None: a split not given
    if any(k in DATASET_KEYS for k in out):
        _keys(out, DATASET_KEYS, ("train",), where)
        return _datasets(out, ref, where)
    _keys(out, ARRAY_KEYS, ("x_train", "y_train"), where)
    return _arrays(out, ref, where)


def _raised(exc: BaseException) -> str:
    """``ValueError: bad n_samples (at mydata.py:12)``: the exception and the line that raised
    it (the innermost frame below hpo's call)."""
    text = traceback.format_exception_only(type(exc), exc)[-1].strip()[:300]
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # [0] is this module's call
    return f"{text} (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else text


def _keys(out: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...],
          where: str) -> None:
    unknown = [str(k) for k in out if k not in allowed]
    if unknown:
        mixed = any(k in ARRAY_KEYS for k in out) and any(k in DATASET_KEYS for k in out)
        why = "arrays and torch Datasets mixed: return one kind" if mixed else "unknown keys"
        raise DataError(f"{where}: {why} ({', '.join(unknown)}); return {_RETURNS}")
    lacking = [k for k in required if k not in out]
    if lacking:
        raise DataError(f"{where}: no {' and no '.join(lacking)} in the dict it returned (keys: "
                        f"{', '.join(map(str, out)) or 'none'}); return {_RETURNS}")


# ----------------------------------------------------------------------------- arrays


def _arrays(out: Mapping[str, Any], ref: str, where: str) -> RawData:
    for s in ("val", "test"):
        if (f"x_{s}" in out) != (f"y_{s}" in out):
            have, lack = (f"x_{s}", f"y_{s}") if f"x_{s}" in out else (f"y_{s}", f"x_{s}")
            raise DataError(f"{where}: {have} without {lack}; a split needs both")
    given = [s for s in _SPLITS if f"x_{s}" in out]
    xs = {s: _features(out[f"x_{s}"], f"x_{s}", where) for s in given}
    ys = {s: _labels(out[f"y_{s}"], f"y_{s}", where) for s in given}
    for s in given:
        if len(xs[s]) != len(ys[s]):
            raise DataError(f"{where}: x_{s} has {len(xs[s])} rows but y_{s} {len(ys[s])}")
        if xs[s].shape[1:] != xs["train"].shape[1:]:
            raise DataError(f"{where}: x_{s} has examples of shape {xs[s].shape[1:]}, x_train "
                            f"{xs['train'].shape[1:]}; every split needs the same shape")
    if len(ys["train"]) == 0:
        raise DataError(f"{where}: x_train has no rows")
    num_classes = classes_of(np.concatenate(list(ys.values())), where)
    dtype = np.int64 if num_classes else np.float32
    pair = {s: (xs[s], ys[s].astype(dtype)) for s in given}
    return RawData(name=ref, where=where, num_classes=num_classes, x=pair["train"][0],
                   y=pair["train"][1], val=pair.get("val"), test=pair.get("test"))


def as_array(value: Any, key: str, where: str) -> np.ndarray:
    """A NumPy array of ``value`` (an array, a torch tensor on any device, a nested list),
    numeric; a ``DataError`` naming ``key`` otherwise."""
    if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach"):
        value = value.detach().cpu().numpy()  # a tensor, without importing torch here
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise DataError(f"{where}: {key} is not an array ({_line(exc)}); return NumPy arrays, "
                        f"torch tensors or lists of numbers") from None
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where}: {key} is not numeric (dtype {array.dtype}, from "
                        f"{type(value).__name__}); return numbers: encode text or categories "
                        f"as numbers")
    return array


def _features(value: Any, key: str, where: str) -> np.ndarray:
    """``x`` as float32 ``(N, ...)``, every value finite."""
    x = as_array(value, key, where)
    if x.ndim < 2:
        raise DataError(f"{where}: {key} has shape {x.shape}; examples need a feature "
                        f"dimension, (N, D) or (N, C, H, W): for one feature, reshape(-1, 1)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise DataError(f"{where}: {key} has {int(bad.sum())} NaN or infinite value(s) (as "
                        f"float32), the first in row {first[0]}; fill or drop them in the "
                        f"loader")
    return x


def _labels(value: Any, key: str, where: str) -> np.ndarray:
    y = as_array(value, key, where)
    if y.ndim != 1:
        raise DataError(f"{where}: {key} has shape {y.shape}; labels are (N,), one per example")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{where}: {key} has {int((~np.isfinite(y)).sum())} NaN or infinite "
                        f"label(s)")
    return y


def classes_of(labels: np.ndarray, where: str) -> int:
    """``num_classes`` for labels of every split together: largest + 1 for whole numbers
    >= 0, 0 for regression targets (floats otherwise)."""
    if labels.dtype.kind == "b" or len(labels) == 0:
        return 2 if labels.dtype.kind == "b" else 0
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise DataError(f"{where}: {int((~np.isfinite(labels)).sum())} label(s) are NaN or "
                        f"infinite")
    whole = labels.dtype.kind in "iu" or bool(np.all(labels == np.round(labels)))
    if whole and labels.min() >= 0:
        return int(labels.max()) + 1
    if labels.dtype.kind in "iu":
        raise DataError(f"{where}: class label {labels.min()} is negative; class labels are "
                        f"0..K-1 (floats that are not whole numbers are regression targets)")
    return 0


def _line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# ----------------------------------------------------------------------------- Datasets


def _datasets(out: Mapping[str, Any], ref: str, where: str) -> RawDatasets:
    """Map-style Datasets; one example's shape from the first item of each, the classes as
    ``_dataset_classes`` finds them."""
    for key, ds in out.items():
        iterable = any(c.__name__ == "IterableDataset" for c in type(ds).__mro__)
        if iterable or not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
            raise DataError(f"{where}: {key} is a {type(ds).__name__}, not a map-style torch "
                            f"Dataset (__len__ and __getitem__)"
                            + ("; IterableDatasets are not supported" if iterable else ""))
    if len(out["train"]) == 0:
        raise DataError(f"{where}: the train Dataset is empty")
    shapes = {key: _item(ds, 0, key, where)[0].shape for key, ds in out.items() if len(ds)}
    for key, shape in shapes.items():
        if not shape:
            raise DataError(f"{where}: {key}[0] has a scalar x; an example needs a feature "
                            f"dimension, (D,) or (C, H, W)")
        if shape != shapes["train"]:
            raise DataError(f"{where}: {key}[0] has x of shape {shape}, train[0] "
                            f"{shapes['train']}; every split needs the same shape")
    num_classes, names = _dataset_classes(out, where)
    return RawDatasets(name=ref, where=where, train=out["train"], val=out.get("val"),
                       test=out.get("test"), input_shape=shapes["train"],
                       num_classes=num_classes, class_names=names)


def _item(ds: Any, i: int, key: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Item ``i`` of the Dataset ``key`` as arrays ``(x, y)``, y a single label."""
    try:
        item = ds[i]
    except Exception as exc:  # noqa: BLE001 - the user's Dataset: say what it raised
        raise DataError(f"{where}: {key}[{i}] raised {_raised(exc)}") from exc
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataError(f"{where}: {key}[{i}] is a {type(item).__name__}"
                        f"{f' of {len(item)}' if isinstance(item, (tuple, list)) else ''}; "
                        f"an item of a Dataset is a pair (x, y)")
    x, y = (as_array(v, f"{key}[{i}] {n}", where) for v, n in zip(item, "xy", strict=True))
    if y.size != 1:
        raise DataError(f"{where}: {key}[{i}] has y of shape {y.shape}; y is one label")
    return x, y.reshape(())


def _dataset_classes(out: Mapping[str, Any], where: str) -> tuple[int, tuple[str, ...]]:
    """``num_classes`` and class names: from a ``classes`` attribute of the train Dataset (as
    torchvision's have; looked up through ``Subset.dataset``), else from the labels of every
    split by ``classes_of``, read from a ``targets`` attribute or, failing that, by reading
    each item once (``len`` items: slow for a large Dataset on disk; give it ``classes``)."""
    classes = _attribute(out["train"], "classes")
    if classes is not None and not isinstance(classes, str) and hasattr(classes, "__len__"):
        if len(classes) < 2:  # the labels themselves are not read: a Dataset may be large
            raise DataError(f"{where}: the train Dataset's classes are {list(classes)}; a "
                            f"classifier needs at least 2 classes")
        return len(classes), tuple(str(c) for c in classes)
    labels = []
    for key, ds in out.items():
        targets = _attribute(ds, "targets")
        if targets is not None:
            labels.append(as_array(targets, f"{key}.targets", where).ravel())
        else:
            labels.append(np.array([_item(ds, i, key, where)[1] for i in range(len(ds))]))
    every = np.concatenate(labels)
    num_classes = classes_of(every, where)
    if num_classes:
        check_classes(every, num_classes, where)
    return num_classes, ()


def _attribute(ds: Any, name: str) -> Any:
    """``ds.<name>``, or that of the Dataset a ``Subset`` (``.dataset``) wraps."""
    for _ in range(8):  # a few Subsets deep at most
        if hasattr(ds, name):
            return getattr(ds, name)
        if not hasattr(ds, "dataset"):
            return None
        ds = ds.dataset
    return None
