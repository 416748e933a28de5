"""``data.source: python``: the user's loader, written as a real module at test time, its arrays
or torch Datasets split and preprocessed; every bad return is an input error naming the loader.
"""

from __future__ import annotations

import itertools
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hpo.config.spec import load_spec, parse_spec
from hpo.data import DataSpec, Dataset, TorchData, data_problems, require_classification
from hpo.data.config import Options
from hpo.data.dataset import load_dataset, split
from hpo.errors import DataError, SpecError, UserCodeError
from models.fields import Invalid

ROOT = Path(__file__).resolve().parents[2]
_NAMES = itertools.count()




@pytest.fixture
def module(tmp_path, monkeypatch):
    """Write ``body`` as a module of its own name in ``tmp_path``; returns the name. sys.path
    and sys.modules are restored afterwards (usercode puts the folder on sys.path)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    written: list[str] = []

    def write(body: str) -> str:
        name = f"userdata_{next(_NAMES)}"
        (tmp_path / f"{name}.py").write_text("import numpy as np\nimport torch\n\n"
                                             + textwrap.dedent(body))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def python(name: str, **kw) -> DataSpec:
    kw.setdefault("preprocess", ())
    return DataSpec(source="python", loader=f"{name}:load", **kw)


def load(name: str, folder: Path, *, seed: int = 0, **kw) -> Dataset | TorchData:
    return load_dataset(python(name, **kw), seed=seed, folder=folder)


BLOBS = """
def blobs(n, classes, seed=0, d=3):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return (rng.normal(size=(n, d)) + y[:, None]).astype(np.float32), y
"""


# ----------------------------------------------------------------------------- arrays


def test_numpy_arrays_are_split_stratified_like_a_built_in_source(module, tmp_path):
    name = module(BLOBS + """
def load(config):
    x, y = blobs(100, 4)
    return {"x_train": x, "y_train": y}
""")
    ds = load(name, tmp_path, seed=3, val_fraction=0.2, test_fraction=0.2)
    assert isinstance(ds, Dataset) and ds.is_classification
    assert ds.name == f"{name}:load" and ds.num_classes == 4 and ds.input_shape == (3,)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (60, 20, 20)
    assert np.bincount(ds.y_val).tolist() == [5] * 4 == np.bincount(ds.y_test).tolist()
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.predefined == ()
    # exactly the built-in split of those labels, with the same seed
    y = np.arange(100) % 4
    train, val, test = split(y, val_fraction=0.2, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(ds.y_val, y[val])
    x = (np.random.default_rng(0).normal(size=(100, 3)) + y[:, None]).astype(np.float32)
    np.testing.assert_array_equal(ds.x_train, x[train])
    assert ds.summary() == f"{name}:load: 60 train / 20 val / 20 test, input (3,), 4 classes"


def test_tensors_and_given_splits_are_kept(module, tmp_path):
    name = module(BLOBS + """
def load(config):
    sizes = [("train", 30), ("val", 9), ("test", 12)]
    parts = {s: blobs(n, 3, seed=i) for i, (s, n) in enumerate(sizes)}
    return {f"{a}_{s}": torch.from_numpy(np.asarray(v)) for s, xy in parts.items()
            for a, v in zip("xy", xy)}
""")
    ds = load(name, tmp_path, val_fraction=0.5, test_fraction=0.3)  # fractions unused
    assert ds.predefined == ("val", "test")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (30, 9, 12)
    x_val = np.random.default_rng(1).normal(size=(9, 3)) + (np.arange(9) % 3)[:, None]
    np.testing.assert_array_equal(ds.x_val, x_val.astype(np.float32))
    assert ds.y_test.dtype == np.int64 and ds.num_classes == 3


def test_lists_and_images_keep_their_shape(module, tmp_path):
    name = module("""
def load(config):
    x = [[[[float(i + j) for j in range(4)] for _ in range(4)]] for i in range(20)]
    return {"x_train": x, "y_train": [i % 2 for i in range(20)]}
""")
    ds = load(name, tmp_path, val_fraction=0.2)
    assert ds.input_shape == (1, 4, 4) and ds.num_classes == 2 and len(ds.y_val) == 4


def test_the_loader_gets_the_seed_and_the_options(module, tmp_path):
    name = module(BLOBS + """
SEEN = []

def load(config):
    SEEN.append(dict(config))
    return dict(zip(("x_train", "y_train"), blobs(config["n"], 2, seed=config["seed"])))
""")
    ds = load(name, tmp_path, seed=7, options={"n": 40, "noise": 0.1})
    assert sys.modules[name].SEEN == [{"seed": 7, "n": 40, "noise": 0.1}]
    assert len(ds.y_train) + len(ds.y_val) == 40
    again = load(name, tmp_path, seed=7, options={"n": 40, "noise": 0.1})
    np.testing.assert_array_equal(ds.x_train, again.x_train)  # same seed, same data and split
    other = load(name, tmp_path, seed=8, options={"n": 40})
    assert not np.array_equal(ds.x_train, other.x_train)
    load(name, tmp_path, seed=7, options={"seed": 99, "n": 10})  # replaces the study's seed
    assert sys.modules[name].SEEN[-1] == {"seed": 99, "n": 10}


def test_preprocessing_statistics_come_from_the_training_split(module, tmp_path):
    name = module(BLOBS + """
def load(config):
    x, y = blobs(40, 2)
    xv, yv = blobs(10, 2, seed=1)
    return {"x_train": x, "y_train": y, "x_val": xv + 5, "y_val": yv}
""")
    ds = load(name, tmp_path, preprocess=("zero_center",))
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32) + \
        (np.arange(40) % 2)[:, None]
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-6)
    xv = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32) + \
        (np.arange(10) % 2)[:, None] + 5
    np.testing.assert_allclose(ds.x_val, xv - x.mean(axis=0), atol=1e-5)
    assert ds.preprocessor.steps == ("zero_center",)


def test_whole_float_labels_are_classes(module, tmp_path):
    name = module(BLOBS + """
def load(config):
    x, y = blobs(30, 3)
    return {"x_train": x, "y_train": y.astype(np.float64)}
""")
    ds = load(name, tmp_path)
    assert ds.num_classes == 3 and ds.y_train.dtype == np.int64
    require_classification(ds)  # no error


def test_regression_targets_are_split_without_stratification(module, tmp_path):
    name = module("""
def load(config):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    return {"x_train": x, "y_train": x @ np.arange(4.0) + 0.1}
""")
    ds = load(name, tmp_path, seed=2, val_fraction=0.2, test_fraction=0.1)
    assert not ds.is_classification and ds.num_classes == 0
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (35, 10, 5)
    assert ds.y_train.dtype == np.float32
    x = np.random.default_rng(0).normal(size=(50, 4))
    y = (x @ np.arange(4.0) + 0.1).astype(np.float32)
    _, val, _ = split(y, val_fraction=0.2, test_fraction=0.1, seed=2, stratify=False)
    np.testing.assert_array_equal(ds.y_val, y[val])
    assert ds.summary().endswith("input (4,), regression targets")
    with pytest.raises(DataError) as info:
        require_classification(ds)
    assert f"{name}:load" in str(info.value) and "regression" in str(info.value)
    assert "data.loader" in str(info.value) and info.value.exit_code == 2


# ----------------------------------------------------------------------------- bad arrays


BAD = {
    # name: (loader body, words of the problem)
    "raises": ("""
def load(config):
    raise ValueError("no such table")
""", "raised ValueError: no such table (at userdata_"),
    "not a dict": ("""
def load(config):
    return [1, 2]
""", "returned list, not a dict"),
    "no x_train": ("""
def load(config):
    return {"y_train": np.zeros(4)}
""", "no x_train in the dict it returned (keys: y_train)"),
    "no y_train": ("""
def load(config):
    return {"x_train": np.zeros((4, 2))}
""", "no y_train"),
    "mismatched lengths": ("""
def load(config):
    return {"x_train": np.zeros((600, 2)), "y_train": np.arange(599) % 2}
""", "x_train has 600 rows but y_train 599"),
    "mismatched val lengths": ("""
def load(config):
    return {"x_train": np.zeros((6, 2)), "y_train": np.arange(6) % 2,
            "x_val": np.zeros((3, 2)), "y_val": np.zeros(2, int)}
""", "x_val has 3 rows but y_val 2"),
    "inconsistent shapes": ("""
def load(config):
    return {"x_train": np.zeros((6, 2)), "y_train": np.arange(6) % 2,
            "x_test": np.zeros((3, 5)), "y_test": np.zeros(3, int)}
""", "x_test has examples of shape (5,), x_train (2,)"),
    "x_val without y_val": ("""
def load(config):
    return {"x_train": np.zeros((6, 2)), "y_train": np.arange(6) % 2, "x_val": np.zeros((3, 2))}
""", "x_val without y_val"),
    "non-numeric": ("""
def load(config):
    return {"x_train": np.array([["a", "b"]] * 6), "y_train": np.arange(6) % 2}
""", "x_train is not numeric"),
    "ragged": ("""
def load(config):
    return {"x_train": [[1.0, 2.0], [3.0]], "y_train": [0, 1]}
""", "x_train is not an array"),
    "NaN in x": ("""
def load(config):
    x = np.zeros((6, 2))
    x[4, 1] = np.nan
    return {"x_train": x, "y_train": np.arange(6) % 2}
""", "x_train has 1 NaN or infinite value(s) (as float32), the first in row 4"),
    "NaN in y": ("""
def load(config):
    return {"x_train": np.zeros((3, 2)), "y_train": np.array([0.5, np.nan, 1.5])}
""", "y_train has 1 NaN or infinite label(s)"),
    "flat x": ("""
def load(config):
    return {"x_train": np.zeros(6), "y_train": np.arange(6) % 2}
""", "x_train has shape (6,); examples need a feature dimension"),
    "labels not (N,)": ("""
def load(config):
    return {"x_train": np.zeros((6, 2)), "y_train": np.zeros((6, 2), int)}
""", "y_train has shape (6, 2); labels are (N,)"),
    "negative class": ("""
def load(config):
    return {"x_train": np.zeros((6, 2)), "y_train": np.arange(6) - 1}
""", "class label -1 is negative"),
    "unknown key": ("""
def load(config):
    return {"x_train": np.zeros((6, 2)), "y_train": np.arange(6) % 2, "x_valid": 1}
""", "unknown keys (x_valid)"),
    "empty": ("""
def load(config):
    return {"x_train": np.zeros((0, 2)), "y_train": np.zeros(0, int)}
""", "x_train has no rows"),
    "arrays and Datasets": ("""
def load(config):
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    return {"train": torch.utils.data.TensorDataset(x, y), "x_val": x, "y_val": y}
""", "arrays and torch Datasets mixed"),
    "an IterableDataset": ("""
class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield torch.zeros(2), 0

def load(config):
    return {"train": Stream()}
""", "train is a Stream, not a map-style torch Dataset"),
    "an item that is no pair": ("""
class Triples(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        return torch.zeros(2), 0, "extra"

def load(config):
    return {"train": Triples()}
""", "train[0] is a tuple of 3; an item of a Dataset is a pair (x, y)"),
    "Datasets of other shapes": ("""
def load(config):
    ds = lambda n, d: torch.utils.data.TensorDataset(torch.zeros(n, d), torch.zeros(n).long())
    return {"train": ds(8, 2), "val": ds(4, 3)}
""", "val[0] has x of shape (3,), train[0] (2,)"),
    "NaN labels in a Dataset": ("""
def load(config):
    y = torch.tensor([0.5, float("nan"), 1.5, 2.0])
    return {"train": torch.utils.data.TensorDataset(torch.zeros(4, 2), y)}
""", "1 label(s) are NaN or infinite"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_loader_is_an_input_error_naming_the_loader_and_the_problem(case, module, tmp_path):
    body, words = BAD[case]
    name = module(body)
    with pytest.raises(DataError) as info:
        load(name, tmp_path)
    message = str(info.value)
    assert message.startswith(f"data.loader {name}:load: "), message
    assert words in message, message
    assert info.value.exit_code == 2


def test_the_exception_a_loader_raised_is_kept_as_the_cause(module, tmp_path):
    name = module("""
def load(config):
    return {}["x_train"]
""")
    with pytest.raises(DataError) as info:
        load(name, tmp_path)
    assert isinstance(info.value.__cause__, KeyError)
    assert f"(at {name}.py:6)" in str(info.value)


def test_a_loader_that_cannot_be_imported_names_the_field(tmp_path):
    with pytest.raises(UserCodeError) as info:
        load("no_such_module_here", tmp_path)
    assert "data.loader" in str(info.value) and info.value.exit_code == 2


# ----------------------------------------------------------------------------- Datasets

DATASETS = """
def tensors(n, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return torch.randn(n, 1, 4, 4, generator=g) + y[:, None, None, None], y

class Labelled(torch.utils.data.Dataset):
    '''Like torchvision's: classes and targets attributes.'''
    classes = ["cat", "dog", "eel"]
    def __init__(self, n, seed=0):
        self.x, self.targets = tensors(n, seed=seed)
    def __len__(self):
        return len(self.targets)
    def __getitem__(self, i):
        return self.x[i], int(self.targets[i])
"""


def test_datasets_without_val_are_split_by_seeded_indices(module, tmp_path):
    name = module(DATASETS + """
def load(config):
    return {"train": torch.utils.data.TensorDataset(*tensors(50))}
""")
    data = load(name, tmp_path, seed=4, val_fraction=0.2, test_fraction=0.1)
    assert isinstance(data, TorchData) and data.is_classification
    assert (len(data.train), len(data.val), len(data.test)) == (35, 10, 5)
    assert data.input_shape == (1, 4, 4) and data.num_classes == 3  # labels scanned once
    assert data.class_names == () and data.predefined == ()
    parts = [set(d.indices) for d in (data.train, data.val, data.test)]
    assert set.union(*parts) == set(range(50)) and sum(map(len, parts)) == 50
    assert data.val.indices == sorted(data.val.indices)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(4)).tolist()
    assert data.test.indices == sorted(order[:5]) and data.val.indices == sorted(order[5:15])
    again = load(name, tmp_path, seed=4, val_fraction=0.2, test_fraction=0.1)
    assert again.val.indices == data.val.indices
    assert load(name, tmp_path, seed=5).val.indices != data.val.indices
    x, y = data.val[0]
    assert x.shape == (1, 4, 4) and int(y) == data.val.indices[0] % 3
    assert data.summary() == (f"{name}:load: 35 train / 10 val / 5 test, input (1, 4, 4), "
                              f"3 classes (torch Datasets)")


def test_given_datasets_are_kept_and_classes_read_off_them(module, tmp_path):
    name = module(DATASETS + """
def load(config):
    return {"train": Labelled(30), "val": Labelled(9, seed=1), "test": Labelled(6, seed=2)}
""")
    data = load(name, tmp_path, val_fraction=0.5)
    assert data.predefined == ("val", "test")
    assert (len(data.train), len(data.val), len(data.test)) == (30, 9, 6)
    assert type(data.train).__name__ == "Labelled"  # nothing split: the loader's own Dataset
    assert data.num_classes == 3 and data.class_names == ("cat", "dog", "eel")
    assert "(val and test as given by the data)" in data.summary()


def test_datasets_with_float_targets_are_regression(module, tmp_path):
    name = module("""
def load(config):
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    return {"train": torch.utils.data.TensorDataset(x, x.sum(1))}
""")
    data = load(name, tmp_path)
    assert data.num_classes == 0 and not data.is_classification
    assert data.summary().endswith("regression targets (torch Datasets)")
    with pytest.raises(DataError, match="regression"):
        require_classification(data)


def test_datasets_with_preprocessing_are_an_input_error(module, tmp_path):
    name = module(DATASETS + """
def load(config):
    return {"train": Labelled(30)}
""")
    with pytest.raises(DataError) as info:
        load_dataset(DataSpec(source="python", loader=f"{name}:load"), seed=0, folder=tmp_path)
    message = str(info.value)
    assert message.startswith(f"data.loader {name}:load returned torch Datasets")
    assert "data.preprocess (zero_center) applies to arrays only" in message
    assert "data.preprocess: []" in message and info.value.exit_code == 2


# ----------------------------------------------------------------------------- the study file


def rules(**kw) -> dict[str, str]:
    return {p.path: p.message for p in data_problems(DataSpec(**kw))}


def test_the_python_source_needs_a_loader_and_no_path():
    assert rules(source="python", loader="m:load", options={"n": 1}) == {}
    assert "a loader is needed" in rules(source="python")["data.loader"]
    assert "reads no path" in rules(source="python", loader="m:load", path=".")["data.path"]


def test_loader_and_options_belong_to_the_python_source():
    found = rules(source="digits", loader="m:load", options={"n": 1})
    assert "used only with data.source: python" in found["data.loader"]
    assert "passed only to a data.loader" in found["data.options"]
    with pytest.raises(SpecError) as info:
        parse_spec({"data": {"source": "digits", "options": {"n": 1}}})
    assert [p.path for p in info.value.problems] == ["data.options"]


@pytest.mark.parametrize("value, ok", [({}, True), ({"n": 1, "p": [1, 2]}, True),
                                       ([1], False), ("n=1", False), ({1: 2}, False)])
def test_options_are_a_mapping_of_names(value, ok):
    if ok:
        assert Options().parse(value) == value
    else:
        with pytest.raises(Invalid):
            Options().parse(value)


def test_options_that_are_not_a_mapping_are_a_study_file_problem():
    with pytest.raises(SpecError) as info:
        parse_spec({"data": {"source": "python", "loader": "m:load", "options": [1]}})
    assert "data.options" in {p.path for p in info.value.problems}


def test_the_shipped_moons_study_loads_its_own_data(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)  # the module is found next to the study file, not in the cwd
    study = ROOT / "search_spaces" / "own_data" / "moons.yaml"
    spec = load_spec(study)
    assert spec.name == "own-data-moons" and spec.data.loader == "moons:load"
    assert yaml.safe_load(study.read_text())["data"]["options"] == spec.data.options
    try:
        ds = load_dataset(spec.data, seed=spec.seed, folder=study.parent)
        again = load_dataset(spec.data, seed=spec.seed, folder=study.parent)
    finally:
        sys.modules.pop("moons", None)
    assert isinstance(ds, Dataset) and ds.name == "moons:load"
    n = spec.data.options["n_samples"]
    assert len(ds.y_train) + len(ds.y_val) == n and len(ds.y_val) == round(n * 0.2)
    assert ds.input_shape == (2,) and ds.num_classes == 2
    assert np.bincount(ds.y_val).tolist() == [n * 0.1] * 2  # stratified
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)  # zero_center, normalize
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-4)


# ----------------------------------------------------------------------------- the built-in loop

PARAMS = {"hidden": (16,), "lr": 0.1, "epochs": 3, "batch_size": 16, "optimizer": "momentum",
          "momentum": 0.9}


def test_the_built_in_loop_trains_on_datasets_through_a_dataloader(module, tmp_path):
    from hpo.trial.train import train_trial

    name = module(DATASETS + """
def load(config):
    return {"train": torch.utils.data.TensorDataset(*tensors(90))}
""")
    data = load(name, tmp_path, seed=1)
    first = train_trial(PARAMS, data, seed=5)
    again = train_trial(PARAMS, data, seed=5)
    assert first.history == again.history  # seeded shuffling: the same batches
    assert len(first.history) == 3 and first.status.name == "OK"
    last = first.last
    arrays = load_dataset(python(module(DATASETS + """
def load(config):
    x, y = tensors(90)
    return {"x_train": x, "y_train": y}
""")), seed=1, folder=tmp_path)
    assert set(last) == set(train_trial(PARAMS, arrays, seed=5).last)  # the same metrics
    assert last["val_accuracy"] > 0.6 and last["train_accuracy"] > 0.6  # chance: 1/3
    other = train_trial(PARAMS, data, seed=6)
    assert other.history != first.history


def test_dataloader_workers_read_the_same_batches(module, tmp_path):
    from hpo.trial.train import train_trial

    name = module(DATASETS + """
def load(config):
    return {"train": Labelled(40), "val": Labelled(12, seed=1)}
""")
    data = load(name, tmp_path)
    params = {**PARAMS, "epochs": 2, "dropout": 0.2}  # dropout draws from the global generator
    alone = train_trial(params, data, seed=0)
    torch.set_num_threads(2)  # a trial with 2 CPUs: one DataLoader worker process
    with_worker = train_trial(params, data, seed=0)
    assert with_worker.initial_loss == pytest.approx(alone.initial_loss, rel=1e-6)
    for a, b in zip(alone.history, with_worker.history, strict=True):
        assert a == pytest.approx(b, rel=1e-4, nan_ok=True)
