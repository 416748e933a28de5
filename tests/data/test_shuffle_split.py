"""hpo's splits without scikit-learn give scikit-learn's own splits, and its errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from hpo.data._shuffle_split import shuffle_split, stratified_shuffle_split

ROOT = Path(__file__).resolve().parents[2]


def _labels(rng: np.random.RandomState, n: int, classes: int) -> np.ndarray:
    """Unbalanced labels with at least 2 of each class, shuffled."""
    weights = rng.uniform(0.2, 1.0, classes)
    y = np.concatenate([np.repeat(np.arange(classes), 2),
                        rng.choice(classes, n - 2 * classes, p=weights / weights.sum())])
    return rng.permutation(y)


CASES = [(n, classes, fraction, seed)
         for n, classes in ((20, 2), (57, 3), (150, 10), (1797, 10), (403, 7))
         for fraction in (0.1, 0.2, 0.25, 1 / 3, 0.5, 0.7)
         for seed in (0, 1, 12345)]


@pytest.mark.parametrize("n,classes,fraction,seed", CASES)
def test_the_splits_are_scikit_learns(n, classes, fraction, seed):
    y = _labels(np.random.RandomState(n + classes), n, classes)
    index = np.arange(100, 100 + n)  # not 0..n-1: the split returns elements, not positions
    want = train_test_split(index, test_size=fraction, stratify=y, random_state=seed)
    got = stratified_shuffle_split(index, y, fraction, seed)
    assert [sorted(g) for g in got] == [sorted(w) for w in want]
    want = train_test_split(index, test_size=fraction, random_state=seed)
    got = shuffle_split(index, fraction, seed)
    assert [sorted(g) for g in got] == [sorted(w) for w in want]


def test_ties_in_the_class_shares_are_broken_as_scikit_learn_breaks_them():
    y = np.repeat(np.arange(7), 3)  # every class's share has the same remainder
    for seed in range(20):
        want = train_test_split(np.arange(21), test_size=0.45, stratify=y, random_state=seed)
        got = stratified_shuffle_split(np.arange(21), y, 0.45, seed)
        assert [sorted(g) for g in got] == [sorted(w) for w in want]


@pytest.mark.parametrize("y,fraction", [
    (np.array([0, 0, 1, 1, 2, 2, 3]), 0.5),  # one example of class 3
    (np.repeat(np.arange(5), 2), 0.3),  # a test split smaller than the classes
    (np.repeat(np.arange(5), 2), 0.8),  # a train split smaller than the classes
    (np.array([0, 0, 1]), 0.9),  # no train split at all
])
def test_the_errors_are_scikit_learns(y, fraction):
    index = np.arange(len(y))
    with pytest.raises(ValueError) as want:
        train_test_split(index, test_size=fraction, stratify=y, random_state=0)
    with pytest.raises(ValueError) as got:
        stratified_shuffle_split(index, y, fraction, 0)
    assert str(got.value) == str(want.value)
    if fraction == 0.9:  # the same error unstratified
        with pytest.raises(ValueError) as want:
            train_test_split(index, test_size=fraction, random_state=0)
        with pytest.raises(ValueError) as got:
            shuffle_split(index, fraction, 0)
        assert str(got.value) == str(want.value)


def test_the_digits_load_and_split_without_importing_scikit_learn():
    """What the driver does before its first trial imports no scikit-learn (about 2 s)."""
    code = ("import sys\n"
            "from hpo.config.spec import load_spec\n"
            "from hpo.data.dataset import load_dataset\n"
            "data = load_dataset(load_spec('search_spaces/digits_mlp.yaml').data, seed=0)\n"
            "print(len(data.y_train), len(data.y_val), 'sklearn' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["1437", "360", "False"]
