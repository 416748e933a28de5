"""Readers for the file formats users bring: IDX (MNIST), CIFAR-10 python batches, npz, csv.

Each reader checks what it reads and raises DataError naming the file and the problem; none of
them scales or splits (``hpo.data.dataset`` does). Arrays come back as NumPy: images ``(N, C, H, W)``
uint8 as stored, features float, labels int64.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import pickle
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from hpo.errors import DataError

__all__ = [
    "CIFAR_ARCHIVE",
    "CIFAR_FOLDER",
    "CIFAR_TRAIN",
    "check_finite",
    "check_labels",
    "cifar_folder",
    "extract_cifar",
    "find_idx",
    "idx_name",
    "read_cifar_batch",
    "read_csv",
    "read_idx",
    "read_npz",
]

# ----------------------------------------------------------------------------- checks


def check_labels(y: np.ndarray, where: str, num_classes: int | None = None) -> np.ndarray:
    """Labels as int64 class indices; integers in ``[0, num_classes)`` (or >= 0)."""
    y = np.asarray(y)
    if y.ndim != 1:
        hint = "; for one-hot labels save y.argmax(axis=1)" if y.ndim == 2 else ""
        raise DataError(f"{where}: labels must be one class index per example (1-D); got shape "
                        f"{y.shape}{hint}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(f"{where}: labels hold NaN or infinite values")
        if (y != np.round(y)).any():
            raise DataError(f"{where}: labels must be whole numbers (class indices); found "
                            f"{y[y != np.round(y)][0]!r}")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where}: labels must be integers (class indices); got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) if num_classes is None else (y < 0) | (y >= num_classes)
    if len(y) and bad.any():
        first = int(np.flatnonzero(bad)[0])
        allowed = ">= 0" if num_classes is None else f"0..{num_classes - 1}"
        raise DataError(f"{where}: labels out of range: {int(bad.sum())} label(s) outside "
                        f"{allowed}, the first {int(y[first])} at example {first}")
    return y


def check_finite(x: np.ndarray, where: str) -> None:
    """Features must be finite: a NaN (a missing value) would poison every statistic."""
    if x.dtype.kind != "f":
        return
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)  # (N,)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise DataError(f"{where}: NaN or infinite values in the features of "
                        f"{int((~finite).sum())} example(s), the first at example {first}; "
                        f"fill or drop them before training")


def _count_mismatch(images: str, n_images: int, labels: str, n_labels: int) -> DataError:
    return DataError(f"{images}: {n_images} images but {labels} has {n_labels} labels; "
                     f"image/label count mismatch (the files must come from the same split)")


# ----------------------------------------------------------------------------- IDX (MNIST)

_IDX_MAGIC = {3: 2051, 1: 2049}  # ndim -> magic number: unsigned bytes, images / labels
_IDX_KIND = {2051: "an images file (idx3)", 2049: "a labels file (idx1)"}


def idx_name(split: str, kind: str) -> str:
    """The standard stem: ``train-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``."""
    return f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"


def find_idx(folder: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``folder``: gzipped or not, ``-idx`` or ``.idx`` (Kaggle)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem + ".gz", stem, dotted + ".gz", dotted):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name says
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: a damaged gzip file ({exc}); download it again") from None
    return raw


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions (3: images, 1: labels)."""
    raw = _read_bytes(path)
    want = _IDX_MAGIC[ndim]
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != want:
        hint = f"; this is {_IDX_KIND[magic]}" if magic in _IDX_KIND else ""
        shown = "none (file shorter than 4 bytes)" if magic is None else f"{magic} (0x{magic:08x})"
        raise DataError(f"{path}: wrong IDX magic number {shown}; expected {want} (0x{want:08x})"
                        f" for {_IDX_KIND[want]}{hint}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)
    if len(raw) - header != size:
        raise DataError(f"{path}: the header promises {' x '.join(map(str, dims))} = {size} "
                        f"bytes of data, the file holds {len(raw) - header}; truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(dims)


def read_idx_pair(folder: Path, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 1, H, W) uint8, labels (N,) int64) of one split's two IDX files."""
    images_path = find_idx(folder, idx_name(split, "images"))
    labels_path = find_idx(folder, idx_name(split, "labels"))
    assert images_path is not None and labels_path is not None  # the caller looked them up
    images = read_idx(images_path, ndim=3)  # (N, H, W)
    labels = read_idx(labels_path, ndim=1)  # (N,)
    if len(images) != len(labels):
        raise _count_mismatch(str(images_path), len(images), labels_path.name, len(labels))
    return images[:, None, :, :], check_labels(labels, str(labels_path), num_classes)


# ----------------------------------------------------------------------------- CIFAR-10

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = {*CIFAR_TRAIN, "test_batch", "batches.meta"}


def cifar_folder(path: Path) -> Path | None:
    """The batches folder: ``path`` itself, or its ``cifar-10-batches-py`` subfolder."""
    for candidate in (path, path / CIFAR_FOLDER):
        if (candidate / CIFAR_TRAIN[0]).is_file():
            return candidate
    return None


def extract_cifar(archive: Path, dest: Path) -> Path:
    """Unpack the batches of ``cifar-10-python.tar.gz`` into ``dest/cifar-10-batches-py``.

    Only the known file names are written, by name, so no member path reaches the disk.
    """
    out = dest / CIFAR_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name).name
                if member.isfile() and name in _CIFAR_FILES:
                    source = tar.extractfile(member)
                    assert source is not None
                    partial = out / f".{name}.part"
                    partial.write_bytes(source.read())
                    partial.replace(out / name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: not a readable tar.gz archive ({exc}); download it "
                        f"again") from None
    return out


class _ArraysOnly(pickle.Unpickler):
    """A CIFAR batch holds a dict of arrays, lists and strings; refuse anything else.

    Unpickling runs whatever callables a pickle names, so a file fetched from a configurable
    URL gets only the few numpy reconstructors a batch needs.
    """

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One python batch: (images (N, 3, 32, 32) uint8, labels (N,) int64)."""
    try:
        with path.open("rb") as f:
            batch = _ArraysOnly(f, encoding="latin1").load()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (a {type(batch).__name__}, "
                        f"not a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: not a CIFAR-10 python batch: keys {sorted(batch)}; expected "
                        f"'data' and 'labels'")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be uint8 of shape (N, 3072) (3 x 32 x 32 "
                        f"pixels, channels first); got {data.dtype} {data.shape}")
    labels = np.asarray(batch["labels"])
    if len(labels) != len(data):
        raise _count_mismatch(str(path), len(data), "its 'labels'", len(labels))
    return data.reshape(-1, 3, 32, 32), check_labels(labels, str(path), num_classes)


# ----------------------------------------------------------------------------- npz

_SPLITS = ("train", "val", "test")


def read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Arrays ``x``, ``y`` -> {"all": (x, y)}; or ``x_train, y_train`` with optional
    ``x_test, y_test`` and ``x_val, y_val`` -> one entry per split present."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive of plain arrays ({exc})") from None
    keys = sorted(arrays)
    expected = "x and y, or x_train and y_train (with optional x_val, y_val, x_test, y_test)"
    if {"x", "y"} <= arrays.keys() and not any(k.endswith(_SPLITS) for k in arrays):
        pairs = {"all": ("x", "y")}
    elif {"x_train", "y_train"} <= arrays.keys():
        pairs = {s: (f"x_{s}", f"y_{s}") for s in _SPLITS
                 if f"x_{s}" in arrays or f"y_{s}" in arrays}
        for xk, yk in pairs.values():
            if xk not in arrays or yk not in arrays:
                raise DataError(f"{path}: {xk if xk in arrays else yk} without "
                                f"{yk if xk in arrays else xk}; arrays found: {', '.join(keys)}")
    else:
        raise DataError(f"{path}: arrays {', '.join(keys) or '(none)'}; expected {expected}")
    out = {}
    for s, (xk, yk) in pairs.items():
        x, y = arrays[xk], arrays[yk]
        where = f"{path} [{xk}]"
        if x.dtype.kind not in "fiub":
            raise DataError(f"{where}: features must be numbers; got dtype {x.dtype}")
        if x.ndim < 2 or len(x) == 0:
            raise DataError(f"{where}: expected (N, features...) with N >= 1; got shape {x.shape}")
        if y.ndim == 1 and len(x) != len(y):
            raise DataError(f"{where}: {len(x)} examples but {yk} has {len(y)} labels; "
                            f"example/label count mismatch")
        check_finite(x, where)
        out[s] = (x, check_labels(y, f"{path} [{yk}]"))
    shapes = {s: xy[0].shape[1:] for s, xy in out.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: the splits' examples differ in shape: "
                        + ", ".join(f"x_{s} {shape}" for s, shape in shapes.items()))
    return out


# ----------------------------------------------------------------------------- csv


def read_csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(features (N, D) float32, labels (N,) int64, class names) from a csv with a header.

    Labels that are all whole numbers >= 0 are class indices as written (names are empty);
    any other labels are names, numbered in sorted order.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text))
    rows = _rows(reader, path)
    header = next(rows, None)
    if not header:
        raise DataError(f"{path}: empty; expected a header row naming the columns")
    header = [h.strip() for h in header]
    if target not in header:
        raise DataError(f"{path}: no target column {target!r}; columns: "
                        f"{_cut(', '.join(header))}. "
                        f"Name the label column with data.target")
    t = header.index(target)
    features = [i for i in range(len(header)) if i != t]
    if not features:
        raise DataError(f"{path}: only the target column {target!r}; no features")
    x_rows: list[list[float]] = []
    labels: list[str] = []
    for line, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} fields, the header has "
                            f"{len(header)}")
        values = []
        for i in features:
            cell = row[i].strip()
            try:
                value = float(cell)
            except ValueError:
                what = "a missing value" if not cell else f"{_quote(cell)} is not a number"
                raise DataError(f"{path}, line {line}, column {header[i]!r}: {what}; features "
                                f"must be numeric") from None
            if not math.isfinite(value):
                raise DataError(f"{path}, line {line}, column {header[i]!r}: NaN or infinite "
                                f"value {cell!r} in the features; fill or drop it")
            values.append(value)
        label = row[t].strip()
        if not label:
            raise DataError(f"{path}, line {line}: empty target {target!r}")
        x_rows.append(values)
        labels.append(label)
    if not labels:
        raise DataError(f"{path}: a header but no examples")
    x = np.asarray(x_rows, dtype=np.float32)  # (N, D)
    y, names = _labels_from_text(labels, path)
    return x, y, names


def _rows(reader: Any, path: Path) -> Any:
    """The csv reader's rows; its own errors (a field over 128 KiB, a NUL byte) name the file
    and the line."""
    try:
        yield from reader
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: not readable as csv ({exc})") from None


def _quote(text: str) -> str:
    """``text`` as a message quotes it: a 50 MB cell is not repeated whole."""
    return repr(text) if len(text) <= _QUOTE_CHARS else f"{text[:_QUOTE_CHARS]!r}... (cut)"


def _cut(text: str) -> str:
    return text if len(text) <= _QUOTE_CHARS else f"{text[:_QUOTE_CHARS]}... (cut)"


_QUOTE_CHARS = 200


def _labels_from_text(labels: list[str], path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    try:
        numbers = np.asarray([float(v) for v in labels])
    except ValueError:
        names = tuple(sorted(set(labels)))
        index = {name: i for i, name in enumerate(names)}
        return np.asarray([index[v] for v in labels], dtype=np.int64), names
    return check_labels(numbers, f"{path} (target column)"), ()
