"""Class labels are checked as the data loads: at least two classes, each of 0..K-1 present.

Labels are used as written (csv names are numbered in sorted order; numbers are not
renumbered). Before these checks a csv whose labels were all 5 read as 6 classes, 5 of them
empty, and failed a sanity check with the wrong cause after Ray had started; a single class
was refused after 30 s, without naming the file, leaving a FAILED study run and a journal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hpo.data.config import DataSpec
from hpo.data.dataset import load_dataset
from hpo.errors import DataError
from tests.fixtures.cli import run_hpo
from tests.fixtures.data_files import write_csv


def csv_with(tmp_path: Path, labels: list[object], name: str = "features.csv") -> DataSpec:
    rows = [[i % 7, (i * 3) % 5, label] for i, label in enumerate(labels)]
    path = write_csv(tmp_path / name, ["a", "b", "label"], rows)
    return DataSpec(source="csv", path=str(path), target="label", preprocess=())


def refused(spec: DataSpec, folder: Path | None = None) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(spec, seed=0, folder=folder)
    return str(info.value)


def test_a_csv_of_one_class_is_refused_naming_the_file(tmp_path):
    message = refused(csv_with(tmp_path, [0] * 20))
    assert "features.csv" in message and "every example has label 0" in message
    assert "at least 2 classes" in message


def test_labels_all_5_are_one_class_not_six_with_five_empty(tmp_path):
    message = refused(csv_with(tmp_path, [5] * 40))
    assert "every example has label 5" in message and "features.csv" in message


def test_labels_3_5_7_are_used_as_written_and_the_empty_classes_named(tmp_path):
    message = refused(csv_with(tmp_path, [3, 5, 7] * 10))
    assert "features.csv" in message
    assert "these are 3, 5, 7" in message and "0, 1, 2, 4, 6 have no example" in message
    assert "Renumber the labels 0..2" in message


def test_csv_labels_as_names_are_numbered_and_accepted(tmp_path):
    data = load_dataset(csv_with(tmp_path, ["cat", "dog", "emu"] * 10), seed=0)
    assert data.num_classes == 3 and data.class_names == ("cat", "dog", "emu")


def test_npz_labels_with_a_gap_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(path, x=np.arange(60, dtype=np.float32).reshape(30, 2), y=np.array([0, 2] * 15))
    message = refused(DataSpec(source="npz", path=str(path), preprocess=()))
    assert "arrays.npz" in message and "class(es) 1 have no example" in message


def test_npz_a_class_only_in_the_given_test_split_counts(tmp_path):
    path = tmp_path / "arrays.npz"
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.savez(path, x_train=x, y_train=np.array([0, 1] * 10), x_test=x[:3],
             y_test=np.array([0, 1, 2]))
    data = load_dataset(DataSpec(source="npz", path=str(path), preprocess=()), seed=0)
    assert data.num_classes == 3


LOADER = """
import numpy as np

def load(config):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    return {"x_train": x, "y_train": np.array(LABELS)}

class Items:
    def __init__(self, labels):
        self.labels = labels
    def __len__(self):
        return len(self.labels)
    def __getitem__(self, i):
        return np.zeros(2, dtype=np.float32), self.labels[i]

def datasets(config):
    return {"train": Items(LABELS)}
"""


@pytest.mark.parametrize("function", ["load", "datasets"])
@pytest.mark.parametrize("labels, says", [
    ([1] * 20, "every example has label 1"),
    ([0, 3] * 10, "class(es) 1, 2 have no example"),
])
def test_a_loaders_labels_are_checked_as_arrays_and_as_datasets(
        tmp_path, monkeypatch, function, labels, says):
    name = f"labels_{function}_{len(set(labels))}_{max(labels)}"
    (tmp_path / f"{name}.py").write_text(LOADER.replace("LABELS", repr(labels)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = DataSpec(source="python", loader=f"{name}:{function}", preprocess=())
    try:
        message = refused(spec, tmp_path)
    finally:
        sys.modules.pop(name, None)
    assert says in message and "data.loader" in message


def test_the_real_hpo_search_refuses_one_class_fast_and_writes_nothing(tmp_path):
    csv_with(tmp_path, [5] * 40)
    (tmp_path / "space.yaml").write_text(
        "name: one-class\n"
        "data: {source: csv, path: features.csv, target: label}\n"
        "train: {epochs: 1}\n"
        "search: {rounds: 1, trials_per_round: 2}\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    start = time.monotonic()
    result = run_hpo("search", "space.yaml", "--study-root", "runs", "--quiet", cwd=tmp_path,
                     env={"RAY_AUTH_MODE": "disabled", "MLFLOW_TRACKING_URI": ""}, timeout=120)
    seconds = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    assert "features.csv" in result.stderr and "every example has label 5" in result.stderr
    assert "Traceback" not in result.stderr
    # no study folder, store, journal or Ray session: the interpreter's imports are the time
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert seconds < 25
