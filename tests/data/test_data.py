"""Data: tiny files in each real format, loaded, split, preprocessed; bad data is exit 2.

Every file is written at test time by ``tests.fixtures.data_files``; downloads come from an HTTP
server on loopback serving the same tiny files.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hpo.cli import main as hpo_main
from hpo.config.spec import parse_spec
from hpo.data import DataSpec
from hpo.data.dataset import SOURCES, STEPS, Dataset, Preprocessor, load_dataset, load_raw, split
from hpo.errors import DataError, SpecError
from tests.fixtures.data_files import (
    class_images,
    md5_line,
    serve,
    sha256_line,
    write_cifar10,
    write_cifar10_archive,
    write_csv,
    write_idx,
    write_mnist,
)




def data(**kw) -> DataSpec:
    kw.setdefault("preprocess", ())
    return DataSpec(**kw)


def partition_ok(ds: Dataset, n: int) -> None:
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == n
    for part in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{part}"), getattr(ds, f"y_{part}")
        assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)
        assert x.flags.c_contiguous


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("source", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz, sep", [(True, "-"), (False, "-"), (True, "."), (False, ".")])
def test_idx_files_load_with_their_test_split(tmp_path, source, gz, sep):
    folder = write_mnist(tmp_path / "m", train_per_class=6, test_per_class=2, gz=gz, sep=sep)
    ds = load_dataset(data(source=source, path=str(folder), val_fraction=0.2,
                           test_fraction=0.3), seed=0)
    partition_ok(ds, 60 + 20)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and ds.name == source
    assert ds.predefined == ("test",) and len(ds.y_test) == 20  # t10k kept; test_fraction unused
    assert len(ds.y_val) == 12 and np.bincount(ds.y_val, minlength=10).min() >= 1  # stratified
    x, y = class_images(2, (28, 28), seed=1)  # what write_mnist put in t10k
    np.testing.assert_array_equal(ds.x_test, x[:, None] / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, y)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert len(ds.class_names) == 10


def test_idx_without_t10k_splits_a_test_set_off_the_training_files(tmp_path):
    folder = write_mnist(tmp_path / "m", train_per_class=10, test=False)
    ds = load_dataset(data(source="mnist", path=str(folder), test_fraction=0.2), seed=0)
    partition_ok(ds, 100)
    assert ds.predefined == () and len(ds.y_test) == 20 and len(ds.y_val) == 20
    assert np.bincount(ds.y_test).tolist() == [2] * 10  # stratified


@pytest.mark.parametrize("layout", ["batches", "parent", "archive"])
def test_cifar10_python_batches(tmp_path, layout):
    root = tmp_path / "c"
    if layout == "archive":
        root.mkdir()
        write_cifar10_archive(root / "cifar-10-python.tar.gz", per_class=2)
    else:
        batches = write_cifar10(root, per_class=2)
        root = batches if layout == "batches" else root
    ds = load_dataset(data(source="cifar10", path=str(root)), seed=0)
    partition_ok(ds, 100 + 20)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.predefined == ("test",) and len(ds.y_test) == 20
    assert ds.class_names[0] == "airplane"
    x, _ = class_images(2, (3, 32, 32), seed=9)
    np.testing.assert_array_equal(ds.x_test, x / np.float32(255))
    if layout == "archive":
        assert (tmp_path / "c" / "cifar-10-batches-py" / "test_batch").is_file()


def test_npz_x_y_is_split_stratified(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(90, 7)), np.repeat(np.arange(3), 30)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(data(source="npz", path=str(tmp_path / "d.npz"), val_fraction=0.2,
                           test_fraction=0.2), seed=0)
    partition_ok(ds, 90)
    assert ds.input_shape == (7,) and ds.num_classes == 3 and ds.name == "d"
    assert np.bincount(ds.y_val).tolist() == [6, 6, 6] == np.bincount(ds.y_test).tolist()


@pytest.mark.parametrize("shape, expect", [((40, 8, 8), (1, 8, 8)), ((40, 3, 8, 8), (3, 8, 8)),
                                           ((40, 8, 8, 3), (3, 8, 8))])
def test_npz_images_get_channels_first_and_uint8_scales(tmp_path, shape, expect):
    x = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    np.savez(tmp_path / "i.npz", x=x, y=np.arange(40) % 4)
    ds = load_dataset(data(source="npz", path=str(tmp_path / "i.npz"), val_fraction=0.25),
                      seed=0)
    assert ds.input_shape == expect
    raw = load_raw(data(source="npz", path=str(tmp_path / "i.npz")))
    channels_last = shape[-1] == 3
    want = np.moveaxis(x, -1, 1) if channels_last else x.reshape(40, *expect)
    np.testing.assert_array_equal(raw.x, want / np.float32(255))


def test_npz_predefined_splits_are_kept(tmp_path):
    rng = np.random.default_rng(1)
    parts = {s: (rng.normal(size=(n, 4)).astype(np.float32), np.arange(n) % 3)
             for s, n in (("train", 30), ("val", 9), ("test", 12))}
    np.savez(tmp_path / "p.npz", **{f"{a}_{s}": v for s, xy in parts.items()
                                    for a, v in zip("xy", xy, strict=True)})
    ds = load_dataset(data(source="npz", path=str(tmp_path / "p.npz"), test_fraction=0.3),
                      seed=0)
    assert ds.predefined == ("val", "test")
    for s, (x, y) in parts.items():
        np.testing.assert_array_equal(getattr(ds, f"x_{s}"), x)
        np.testing.assert_array_equal(getattr(ds, f"y_{s}"), y)


def test_npz_test_split_only_draws_val_from_train(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "t.npz", x_train=rng.normal(size=(50, 3)), y_train=np.arange(50) % 5,
             x_test=rng.normal(size=(10, 3)), y_test=np.arange(10) % 5)
    ds = load_dataset(data(source="npz", path=str(tmp_path / "t.npz"), val_fraction=0.2), seed=0)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (40, 10, 10)
    assert ds.predefined == ("test",)


def test_csv_numeric_and_named_targets(tmp_path):
    rows = [[i % 3, i * 0.5, -i] for i in range(30)]
    write_csv(tmp_path / "n.csv", ["target", "a", "b"], rows)
    ds = load_dataset(data(source="csv", path=str(tmp_path / "n.csv")), seed=0)
    partition_ok(ds, 30)
    assert ds.input_shape == (2,) and ds.num_classes == 3 and ds.class_names == ()
    names = ["setosa", "virginica", "versicolor"]
    write_csv(tmp_path / "s.csv", ["x1", "species", "x2"],
              [[i, names[i % 3], i / 2] for i in range(30)])
    raw = load_raw(data(source="csv", path=str(tmp_path / "s.csv"), target="species"))
    assert raw.class_names == ("setosa", "versicolor", "virginica")
    assert raw.y[:3].tolist() == [0, 2, 1]  # sorted names, numbered
    np.testing.assert_array_equal(raw.x[:2], [[0, 0], [1, 0.5]])


def test_split_is_stratified_seeded_and_a_partition():
    y = np.repeat(np.arange(4), [40, 20, 20, 20])
    a = split(y, val_fraction=0.25, test_fraction=0.25, seed=3)
    b = split(y, val_fraction=0.25, test_fraction=0.25, seed=3)
    c = split(y, val_fraction=0.25, test_fraction=0.25, seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(100))
    for part in a[1:]:
        assert np.bincount(y[part]).tolist() == [10, 5, 5, 5]
    train, val, test = split(y, val_fraction=0.0, test_fraction=0.0, seed=0)
    assert len(train) == 100 and len(val) == len(test) == 0


@pytest.mark.parametrize("arch, hidden", [("mlp", (16,)), ("convnet", (4,))])
def test_images_keep_their_channels_for_the_convnet_and_the_mlp_flattens(tmp_path, arch, hidden):
    from models import build_model
    from models.config import ModelConfig

    ds = load_dataset(data(source="mnist", path=str(write_mnist(tmp_path / "m"))), seed=0)
    assert ds.x_train.ndim == 4
    model = build_model(ModelConfig(arch=arch, hidden=hidden), input_shape=ds.input_shape,
                        num_classes=ds.num_classes)
    assert model(torch.from_numpy(ds.x_val)).shape == (len(ds.y_val), 10)


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_loader_is_a_source_the_study_file_accepts(name, tmp_path):
    # data.source takes its names from SOURCES, one loader each (a path, which file-based
    # sources need, is a rule between fields, not about the name).
    where = {"loader": "json:loads"} if name == "python" else {"path": str(tmp_path)}
    assert parse_spec({"data": {"source": name, **where}}).data.source == name


@pytest.mark.parametrize("step", list(STEPS))
def test_every_step_is_a_preprocessing_the_study_file_accepts(step):
    assert parse_spec({"data": {"preprocess": [step]}}).data.preprocess == (step,)


def test_an_unknown_source_or_step_is_answered_with_the_data_packages_names():
    with pytest.raises(SpecError) as info:
        parse_spec({"data": {"source": "imagenet", "preprocess": ["sharpen"]}})
    allowed = {p.path: p.allowed for p in info.value.problems}
    assert allowed["data.source"] == " | ".join(SOURCES)
    assert " | ".join(STEPS) in allowed["data.preprocess"]


# ----------------------------------------------------------------------------- bad data


def _mnist(tmp_path: Path) -> Path:
    return write_mnist(tmp_path / "m", train_per_class=3, test=False)


def _swap_magic(tmp_path):
    folder = _mnist(tmp_path)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros(30, np.uint8))  # a labels file
    return data(source="mnist", path=str(folder))


def _truncated(tmp_path):
    folder = _mnist(tmp_path)
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    return data(source="mnist", path=str(folder))


def _count_mismatch(tmp_path):
    folder = _mnist(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    return data(source="mnist", path=str(folder))


def _label_out_of_range(tmp_path):
    folder = _mnist(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(30, 10, np.uint8))
    return data(source="mnist", path=str(folder))


def _cifar_count_mismatch(tmp_path):
    batches = write_cifar10(tmp_path / "c")
    x, y = class_images(1, (3, 32, 32))
    (batches / "data_batch_3").write_bytes(pickle.dumps(
        {"data": x.reshape(10, -1), "labels": y[:9].tolist()}, protocol=2))
    return data(source="cifar10", path=str(tmp_path / "c"))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def _cifar_not_arrays(tmp_path):
    batches = write_cifar10(tmp_path / "c")
    (batches / "data_batch_2").write_bytes(pickle.dumps({"data": _Evil(), "labels": []}))
    return data(source="cifar10", path=str(tmp_path / "c"))


def _npz_nan(tmp_path):
    x = np.ones((20, 3))
    x[7, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(20) % 2)
    return data(source="npz", path=str(tmp_path / "nan.npz"))


def _npz_negative_label(tmp_path):
    np.savez(tmp_path / "neg.npz", x=np.ones((20, 3)), y=np.arange(20) % 2 - 1)
    return data(source="npz", path=str(tmp_path / "neg.npz"))


def _npz_wrong_keys(tmp_path):
    np.savez(tmp_path / "keys.npz", features=np.ones((20, 3)), labels=np.arange(20) % 2)
    return data(source="npz", path=str(tmp_path / "keys.npz"))


def _csv_nan(tmp_path):
    rows = [[i % 2, i, 1.0] for i in range(20)]
    rows[4][2] = "nan"
    return data(source="csv", path=str(write_csv(tmp_path / "nan.csv", ["target", "a", "b"],
                                                 rows)))


def _csv_missing_value(tmp_path):
    rows = [[i % 2, i, 1.0] for i in range(20)]
    rows[4][1] = ""
    return data(source="csv", path=str(write_csv(tmp_path / "gap.csv", ["target", "a", "b"],
                                                 rows)))


def _csv_no_target(tmp_path):
    return data(source="csv", path=str(write_csv(tmp_path / "nt.csv", ["label", "a"],
                                                 [[i % 2, i] for i in range(20)])))


def _too_few(tmp_path):
    np.savez(tmp_path / "few.npz", x=np.ones((7, 2)), y=np.arange(7) % 4)
    return data(source="npz", path=str(tmp_path / "few.npz"))


def _flat_per_channel(tmp_path):
    np.savez(tmp_path / "flat.npz", x=np.ones((20, 3)), y=np.arange(20) % 2)
    return data(source="npz", path=str(tmp_path / "flat.npz"), preprocess=("per_channel_mean",))


def _missing_idx(tmp_path):
    (tmp_path / "empty").mkdir()
    return data(source="mnist", path=str(tmp_path / "empty"))


BAD = {
    # name: (writer, file named in the message, words of the problem)
    "missing file": (_missing_idx, "empty", "no train-images-idx3-ubyte"),
    "wrong IDX magic": (_swap_magic, "train-images-idx3-ubyte.gz",
                        "wrong IDX magic number 2049"),
    "truncated IDX": (_truncated, "train-images-idx3-ubyte.gz", "truncated"),
    "image/label count mismatch": (_count_mismatch, "train-images-idx3-ubyte.gz",
                                   "30 images but train-labels-idx1-ubyte.gz has 29 labels"),
    "cifar count mismatch": (_cifar_count_mismatch, "data_batch_3", "count mismatch"),
    "cifar batch that is not arrays": (_cifar_not_arrays, "data_batch_2", "refusing to load"),
    "labels out of range": (_label_out_of_range, "train-labels-idx1-ubyte.gz",
                            "labels out of range"),
    "negative label": (_npz_negative_label, "neg.npz", "labels out of range"),
    "NaN in npz features": (_npz_nan, "nan.npz", "NaN"),
    "NaN in csv features": (_csv_nan, "nan.csv", "NaN"),
    "missing csv value": (_csv_missing_value, "gap.csv", "line 6, column 'a': a missing value"),
    "csv without the target column": (_csv_no_target, "nt.csv", "no target column 'target'"),
    "npz without x and y": (_npz_wrong_keys, "keys.npz", "expected x and y"),
    "fewer examples than classes x 2": (_too_few, "few.npz", "at least classes x 2 = 8"),
    "per-channel mean of flat features": (_flat_per_channel, "flat.npz",
                                          "per_channel_mean needs images"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_an_input_error_naming_file_and_problem(tmp_path, case, capsys):
    writer, filename, words = BAD[case]
    spec = writer(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(spec, seed=0)
    assert info.value.exit_code == 2
    assert filename in str(info.value) and words in str(info.value), str(info.value)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("case", ["wrong IDX magic", "NaN in csv features", "labels out of range"])
def test_bad_data_exits_2_from_the_cli_before_anything_is_logged(tmp_path, case, capsys):
    writer, filename, words = BAD[case]
    d = writer(tmp_path)
    study = {"data": {"source": d.source, "path": d.path, "preprocess": []},
             "model": {"hidden": [8]}, "train": {"epochs": 1}}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(study))
    code = hpo_main(["search", str(space), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                     "--study-root", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert filename in err and words in err and "Traceback" not in err
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "runs").exists()


def test_a_missing_npz_is_named_by_the_spec_check(tmp_path):
    with pytest.raises(SpecError) as info:
        parse_spec({"data": {"source": "npz", "path": str(tmp_path / "gone.npz")}})
    assert info.value.exit_code == 2 and "gone.npz" in str(info.value)


# ----------------------------------------------------------------------------- preprocessing


def correlated(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) + 2 * np.eye(d)
    return (rng.normal(size=(n, d)) @ mixing + rng.normal(size=d) * 5).astype(np.float32)


def npz_splits(tmp_path: Path, x_train, x_val, x_test=None, classes: int = 3) -> str:
    splits = {"train": x_train, "val": x_val, **({"test": x_test} if x_test is not None else {})}
    arrays = {}
    for name, x in splits.items():
        arrays.update({f"x_{name}": x, f"y_{name}": np.arange(len(x)) % classes})
    np.savez(tmp_path / "s.npz", **arrays)
    return str(tmp_path / "s.npz")


def cov(x: np.ndarray) -> np.ndarray:
    return np.cov(x.astype(np.float64), rowvar=False, bias=True)


def test_whiten_gives_identity_training_covariance(tmp_path):
    x = correlated(3000, 6)
    assert np.abs(cov(x) - np.diag(np.diag(cov(x)))).max() > 1.0  # strongly correlated input
    path = npz_splits(tmp_path, x, correlated(300, 6, seed=1))
    ds = load_dataset(data(source="npz", path=path, preprocess=("whiten",)), seed=0)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(cov(ds.x_train), np.eye(6), atol=1e-5)


def test_pca_gives_diagonal_covariance_by_decreasing_variance(tmp_path):
    x = correlated(3000, 6)
    ds = load_dataset(data(source="npz", path=npz_splits(tmp_path, x, x[:30]),
                           preprocess=("pca",)), seed=0)
    c = cov(ds.x_train)
    off = c - np.diag(np.diag(c))
    assert np.abs(off).max() < 1e-5 * np.diag(c).max()
    assert np.all(np.diff(np.diag(c)) <= 0)
    np.testing.assert_allclose(np.diag(c), ds.preprocessor.state_[0]["variance"], rtol=1e-4)
    np.testing.assert_allclose(np.trace(c), np.trace(cov(x)), rtol=1e-4)  # a rotation


def test_whiten_drops_directions_without_training_variance():
    # digits: border pixels are 0 in every training image, so the covariance is singular.
    ds = load_dataset(DataSpec(preprocess=("whiten",)), seed=0)
    raw_dims = 64
    assert ds.input_shape[0] < raw_dims
    np.testing.assert_allclose(cov(ds.x_train), np.eye(ds.input_shape[0]), atol=1e-4)
    assert np.isfinite(ds.x_val).all() and np.abs(ds.x_val).max() < 100


def test_zero_center_uses_training_statistics_only(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(60, 4)).astype(np.float32) + 1.0
    x_val = rng.normal(size=(30, 4)).astype(np.float32) + 6.0  # a shifted val split
    ds = load_dataset(data(source="npz", path=npz_splits(tmp_path, x_train, x_val),
                           preprocess=("zero_center",)), seed=0)
    np.testing.assert_allclose(ds.preprocessor.state_[0]["mean"], x_train.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-6)
    # the val mean was not subtracted: its shift relative to train survives
    np.testing.assert_allclose(ds.x_val.mean(0), x_val.mean(0) - x_train.mean(0), atol=1e-5)


@pytest.mark.parametrize("steps", [("zero_center",), ("normalize",), ("per_channel_mean",),
                                   ("zero_center", "normalize", "pca")])
def test_statistics_come_from_the_training_indices_of_a_random_split(steps):
    spec = DataSpec(preprocess=steps, val_fraction=0.3, test_fraction=0.2)
    ds = load_dataset(spec, seed=5)
    raw = load_raw(spec)
    train, _, _ = split(raw.y, val_fraction=0.3, test_fraction=0.2, seed=5)
    alone = Preprocessor(steps)
    np.testing.assert_array_equal(alone.fit_transform(raw.x[train]), ds.x_train)
    full = Preprocessor(steps)
    full.fit_transform(raw.x)
    assert not np.allclose(full.state_[0][next(iter(full.state_[0]))],
                           ds.preprocessor.state_[0][next(iter(full.state_[0]))])


def test_per_channel_mean_and_normalize():
    pre = Preprocessor(("per_channel_mean",))
    x = np.random.default_rng(0).uniform(size=(50, 3, 4, 4)).astype(np.float32)
    x += np.array([0.0, 5.0, -2.0], dtype=np.float32)[:, None, None]
    out = pre.fit_transform(x)
    assert pre.state_[0]["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.abs(out.mean(axis=0)).max() > 1e-3  # one mean per channel, not per pixel
    norm = Preprocessor(("zero_center", "normalize"))
    z = norm.fit_transform(x)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-4)
    with pytest.raises(DataError, match="per_channel_mean needs images"):
        Preprocessor(("per_channel_mean",)).fit_transform(np.zeros((4, 3), np.float32))


STEP_SEQUENCES = [(), ("zero_center",), ("per_channel_mean", "normalize"),
                  ("zero_center", "normalize", "pca"), ("per_channel_mean", "whiten")]


@pytest.mark.parametrize("steps", STEP_SEQUENCES)
def test_state_dict_and_file_round_trips_transform_identically(tmp_path, steps):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(80, 3, 4, 4)).astype(np.float32)
    new = rng.uniform(size=(10, 3, 4, 4)).astype(np.float32)
    pre = Preprocessor(steps)
    pre.fit_transform(x)
    again = Preprocessor.from_state_dict(pre.state_dict())
    pre.save(tmp_path / "pre.npz")
    loaded = Preprocessor.load(tmp_path / "pre.npz")
    for other in (again, loaded):
        assert other.steps == pre.steps and other.input_shape_ == (3, 4, 4)
        np.testing.assert_array_equal(other.transform(new), pre.transform(new))
    with pytest.raises(DataError, match="fitted on"):
        loaded.transform(np.zeros((2, 48), np.float32))


@pytest.mark.parametrize("source, arch, steps", [
    ("npz", "mlp", ("zero_center", "normalize", "whiten")),
    ("mnist", "convnet", ("per_channel_mean", "normalize")),
])
def test_saved_model_and_transform_reproduce_the_predictions(tmp_path, source, arch, steps):
    from hpo.trial.train import model_config, train_trial
    from models import build_model

    if source == "npz":
        path = npz_splits(tmp_path, correlated(120, 5), correlated(30, 5, 1), correlated(30, 5, 2))
    else:
        path = str(write_mnist(tmp_path / "m", train_per_class=5, test_per_class=2))
    spec = data(source=source, path=path, preprocess=steps)
    ds = load_dataset(spec, seed=0)
    params = {"arch": arch, "hidden": [6], "batchnorm": True, "epochs": 2, "batch_size": 16,
              "lr": 0.05}
    outcome = train_trial(params, ds, seed=0, keep_model=True)
    model = outcome.model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(ds.x_test))

    torch.save(model.state_dict(), tmp_path / "model.pt")
    ds.preprocessor.save(tmp_path / "preprocess.npz")

    pre = Preprocessor.load(tmp_path / "preprocess.npz")
    reloaded = build_model(model_config(params), input_shape=ds.input_shape,
                           num_classes=ds.num_classes)
    reloaded.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    raw_test = load_raw(spec).test[0]  # what a user holds: examples as the source reads them
    with torch.no_grad():
        got = reloaded.eval()(torch.from_numpy(pre.transform(raw_test)))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert got.argmax(1).tolist() == expected.argmax(1).tolist()


# ----------------------------------------------------------------------------- download


@pytest.fixture
def mirror(tmp_path):
    """An HTTP server on loopback with the tiny mnist files and a cifar archive."""
    root = tmp_path / "mirror"
    write_mnist(root / "mnist", train_per_class=5, test_per_class=2, gz=True)
    (root / "cifar").mkdir()
    write_cifar10_archive(root / "cifar" / "cifar-10-python.tar.gz")
    with serve(root) as (url, requests):
        yield root, url, requests


def test_download_fetches_verifies_and_caches(mirror, tmp_path):
    root, url, requests = mirror
    lines = tuple(sha256_line(p) for p in sorted((root / "mnist").iterdir()))
    cache = tmp_path / "cache"
    cache.mkdir()
    spec = data(source="mnist", path=str(cache), download=True, url=url + "mnist/",
                checksums=lines)
    ds = load_dataset(spec, seed=0)
    assert ds.predefined == ("test",) and len(ds.y_train) + len(ds.y_val) == 50
    assert sorted(requests) == sorted(f"/mnist/{p.name}" for p in (root / "mnist").iterdir())
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in
                                                             (root / "mnist").iterdir())
    again = load_dataset(spec, seed=0)  # cached: nothing fetched twice
    assert len(requests) == 4
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_download_into_the_default_cache_folder(mirror, tmp_path, monkeypatch):
    root, url, _ = mirror
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    spec = parse_spec({"data": {"source": "cifar10", "download": True, "url": url + "cifar",
                                "checksums": [md5_line(root / "cifar" / "cifar-10-python.tar.gz")]
                                }}).data
    ds = load_dataset(spec, seed=0)
    assert ds.input_shape == (3, 32, 32) and len(ds.y_test) == 20
    cached = tmp_path / "xdg" / "hpo" / "cifar10"
    assert (cached / "cifar-10-python.tar.gz").is_file()
    assert (cached / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_download_rejects_a_file_whose_checksum_differs(mirror, tmp_path):
    _, url, _ = mirror
    cache = tmp_path / "cache"
    cache.mkdir()
    # no data.checksums: the official MD5s apply, and these tiny files are not the official ones
    spec = data(source="mnist", path=str(cache), download=True, url=url + "mnist/")
    with pytest.raises(DataError) as info:
        load_dataset(spec, seed=0)
    message = str(info.value)
    assert "md5 checksum mismatch" in message and "data.checksums" in message
    assert url + "mnist/train-images-idx3-ubyte.gz" in message
    assert list(cache.iterdir()) == []  # nothing unverified kept, no partial file


@pytest.mark.parametrize("where, words", [("nothing-here/", "HTTP 404"),
                                          (None, "download failed")])
def test_download_failures_name_the_url(mirror, tmp_path, where, words):
    _, url, _ = mirror
    url = url + where if where else "http://127.0.0.1:9/"  # port 9: nothing listens
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DataError) as info:
        load_dataset(data(source="fashion_mnist", path=str(cache), download=True, url=url),
                     seed=0)
    assert words in str(info.value) and url in str(info.value)
    assert info.value.exit_code == 2 and list(cache.iterdir()) == []


# ----------------------------------------------------------------------------- spec rules


def problems(raw: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return {p.path: p.render() for p in info.value.problems}


@pytest.mark.parametrize("body, path, words", [
    ({"source": "npz", "path": ".", "download": True}, "data.download", "cannot be downloaded"),
    ({"source": "mnist", "path": ".", "url": "http://x/"}, "data.url", "only when downloading"),
    ({"source": "mnist", "download": True, "url": "ftp.example.com"}, "data.url", "not a URL"),
    ({"source": "mnist", "download": True, "checksums": ["abc  train-images-idx3-ubyte.gz"]},
     "data.checksums[0]", "neither md5"),
    ({"source": "mnist", "download": True, "checksums": ["a" * 64 + "  mnist.npz"]},
     "data.checksums[0]", "not one of mnist's files"),
    ({"source": "mnist"}, "data.path", "or data.download: true"),
    ({"source": "csv", "path": ".", "preprocess": ["per_channel_mean"]}, "data.preprocess",
     "csv features are flat"),
    ({"preprocess": ["pca", "per_channel_mean"]}, "data.preprocess", "pca flattens them"),
])
def test_data_spec_rules(body, path, words):
    found = problems({"data": body})
    assert path in found and words in found[path], found


def test_flattening_steps_and_csv_do_not_go_with_a_convnet():
    found = problems({"data": {"preprocess": ["whiten"]},
                      "model": {"arch": {"choice": ["mlp", "convnet"]}}})
    assert "model.arch convnet needs images" in found["data.preprocess"]
    found = problems({"data": {"source": "csv", "path": "."}, "model": {"arch": "convnet"}})
    assert "csv features are flat" in found["data.source"]


def test_download_needs_no_path_and_resolves_its_defaults():
    spec = parse_spec({"data": {"source": "fashion_mnist", "download": True}})
    assert spec.data.path is None and spec.data.url is None and spec.data.checksums == ()
    resolved = yaml.safe_load(spec.to_yaml())["data"]
    assert resolved["download"] is True and resolved["checksums"] == []
