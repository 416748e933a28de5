"""scikit-learn's ``train_test_split`` (shuffled, optionally stratified), without scikit-learn.

Importing ``sklearn.model_selection`` costs about 1.5 s of CPU, on the way to every study's first
trial, for two seeded index splits. These give the same index sets as scikit-learn 1.9's
``train_test_split(index, test_size=fraction, stratify=..., random_state=seed)`` (the same
draws from the same ``RandomState``, in the same order) and raise its ``ValueError`` texts;
``tests/data/test_shuffle_split.py`` holds them to scikit-learn itself. The order of the
returned indices is not scikit-learn's (its last shuffle is skipped): callers sort them.
"""

from __future__ import annotations

from math import ceil

import numpy as np

__all__ = ["shuffle_split", "stratified_shuffle_split"]


def _sizes(n_samples: int, test_size: float) -> tuple[int, int]:
    """``_validate_shuffle_split`` for a ``test_size`` in (0, 1) (the study file's rules) and
    no train size."""
    n_test = ceil(test_size * n_samples)
    n_train = n_samples - n_test
    if n_train == 0:
        raise ValueError(f"With n_samples={n_samples}, test_size={test_size} and "
                         f"train_size=None, the resulting train set will be empty. Adjust any of "
                         f"the aforementioned parameters.")
    return n_train, n_test


def shuffle_split(index: np.ndarray, test_size: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` of ``index``, as ``ShuffleSplit``."""
    n_train, n_test = _sizes(len(index), test_size)
    permutation = np.random.RandomState(seed).permutation(len(index))
    return index[permutation[n_test:n_test + n_train]], index[permutation[:n_test]]


def stratified_shuffle_split(index: np.ndarray, y: np.ndarray, test_size: float,
                             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` of ``index`` with ``y``'s class shares in each, as
    ``StratifiedShuffleSplit``."""
    n_train, n_test = _sizes(len(index), test_size)
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        raise ValueError(f"The least populated classes in y have only 1 member, which is too "
                         f"few. The minimum number of groups for any class cannot be less than "
                         f"2. Classes with too few members are: "
                         f"{classes[class_counts < 2].tolist()}")
    for name, size in (("train_size", n_train), ("test_size", n_test)):
        if size < len(classes):
            raise ValueError(f"The {name} = {size} should be greater or equal to the number "
                             f"of classes = {len(classes)}")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i, members in enumerate(class_indices):
        shuffled = members.take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(shuffled[:n_i[i]])
        test.extend(shuffled[n_i[i]:n_i[i] + t_i[i]])
    return index[np.asarray(train, dtype=np.int64)], index[np.asarray(test, dtype=np.int64)]


def _approximate_mode(class_counts: np.ndarray, n_draws: int,
                      rng: np.random.RandomState) -> np.ndarray:
    """How many of each class to draw: the shares floored, the rest to the largest remainders,
    ties broken at random (``sklearn.utils.extmath._approximate_mode``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
