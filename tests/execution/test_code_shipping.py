"""What a study ships to a Ray cluster's workers (``code_runtime_env``), without a cluster: the
study file's folder as Ray's working_dir less what a study leaves behind, or just the files and
folders ``code:`` lists, gathered in a temporary folder; a folder past ``CODE_LIMIT_BYTES`` is an
input error that says to list the code under ``code:``; a study that runs none of the user's
code ships nothing.

What Ray itself packs from that working_dir is checked with Ray's own packer (no ``ray.init``),
so the excludes are read the way Ray reads them, not the way this test would.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hpo.config.spec import Spec, load_spec, parse_spec
from hpo.errors import InputError
from hpo.execution import cluster
from hpo.execution.cluster import CODE_EXCLUDES, CODE_PREFIX, code_runtime_env

MODULE = "shiptrain"  # imported by load_spec's check: a name no other test uses
FIT = textwrap.dedent("""\
    import helpers

    def fit(config, trial):
        for epoch in (1, 2):
            trial.report(epoch=epoch, val_score=helpers.score(epoch), train_score=1.0)
""")
STUDY = {"name": "ship", "trainable": f"{MODULE}:fit",
         "train": {"lr": {"loguniform": [1e-3, 1e-1]}},
         "search": {"metric": "val_score", "mode": "max"}}


@pytest.fixture
def study_folder(tmp_path, monkeypatch) -> Path:
    """A study folder as a user leaves it after a local run: the trainable, a package it
    imports, and the study's own outputs beside them."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_spec puts the folder in front
    for name in (MODULE, "helpers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    folder = tmp_path / "study"
    (folder / "helpers").mkdir(parents=True)
    (folder / f"{MODULE}.py").write_text(FIT)
    (folder / "helpers" / "__init__.py").write_text("def score(epoch):\n    return epoch / 2\n")
    (folder / "helpers" / "__pycache__").mkdir()
    (folder / "helpers" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0" * 64)
    (folder / "mlruns" / "0").mkdir(parents=True)
    (folder / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    (folder / "hpo_runs" / "ship").mkdir(parents=True)
    (folder / "hpo_runs" / "ship" / "best.yaml").write_text("name: ship\n")
    (folder / "mlflow.db").write_bytes(b"\0" * 4096)
    (folder / "model.ckpt").write_bytes(b"\0" * 4096)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "notes.md").write_text("what the study is for\n")
    return folder


@pytest.fixture
def gathered() -> Iterator[list[Path]]:
    """The temporary ``code:`` folders a test makes, removed afterwards (on a cluster,
    start_ray removes them once Ray has uploaded them)."""
    folders: list[Path] = []
    yield folders
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _spec(folder: Path, **top: object) -> Spec:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **top}))
    return load_spec(path)


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _shipped(env: dict, tmp_path: Path) -> set[str]:
    """The files Ray packs from ``env`` for the workers, by Ray's own packer."""
    from ray._private.runtime_env.packaging import create_package

    package = tmp_path / "package.zip"
    create_package(env["working_dir"], package, include_gitignore=True,
                   excludes=env["excludes"])
    with zipfile.ZipFile(package) as archive:
        return {n for n in archive.namelist() if not n.endswith("/")}


def test_the_study_folder_is_the_working_dir_less_what_a_study_leaves(study_folder, tmp_path):
    env = code_runtime_env(_spec(study_folder))

    assert env == {"working_dir": str(study_folder), "excludes": list(CODE_EXCLUDES)}
    assert _shipped(env, tmp_path) == {"study.yaml", f"{MODULE}.py", "helpers/__init__.py",
                                       "notes.md"}


def test_what_is_excluded_does_not_count_toward_the_limit(study_folder, monkeypatch):
    # The stores, checkpoints and .git above are 8 KiB; the code is a few hundred bytes.
    monkeypatch.setattr(cluster, "CODE_LIMIT_BYTES", 2048)
    assert code_runtime_env(_spec(study_folder))["working_dir"] == str(study_folder)


def test_code_gathers_just_the_listed_files_and_folders(study_folder, tmp_path, gathered):
    env = code_runtime_env(_spec(study_folder, code=[f"{MODULE}.py", "helpers"]))
    folder = Path(env["working_dir"])
    gathered.append(folder)

    assert folder != study_folder and folder.name.startswith(CODE_PREFIX)
    assert env["excludes"] == list(CODE_EXCLUDES)
    # at the top of the folder, importable as from the study's folder; no bytecode
    assert _files(folder) == {f"{MODULE}.py", "helpers/__init__.py"}
    assert (folder / f"{MODULE}.py").read_text() == FIT
    assert _shipped(env, tmp_path) == {f"{MODULE}.py", "helpers/__init__.py"}
    assert _files(study_folder) >= {"notes.md", "mlflow.db"}  # the study folder is untouched


def test_a_folder_over_the_limit_says_to_list_the_code(study_folder, monkeypatch):
    (study_folder / "data.npy").write_bytes(b"\0" * 5000)
    monkeypatch.setattr(cluster, "CODE_LIMIT_BYTES", 4096)
    spec = _spec(study_folder)

    with pytest.raises(InputError) as raised:
        code_runtime_env(spec)
    message = str(raised.value)
    assert str(study_folder) in message
    assert "`code:`" in message and "4096" not in message  # in MiB, as a user reads it


def test_code_that_leaves_the_data_behind_fits_under_the_limit(study_folder, monkeypatch,
                                                               gathered):
    (study_folder / "data.npy").write_bytes(b"\0" * 5000)
    monkeypatch.setattr(cluster, "CODE_LIMIT_BYTES", 4096)

    env = code_runtime_env(_spec(study_folder, code=[f"{MODULE}.py", "helpers"]))
    gathered.append(Path(env["working_dir"]))
    assert "data.npy" not in _files(Path(env["working_dir"]))


def test_listed_code_over_the_limit_is_refused_too(study_folder, monkeypatch, tmp_path):
    (study_folder / "helpers" / "table.bin").write_bytes(b"\0" * 5000)
    monkeypatch.setattr(cluster, "CODE_LIMIT_BYTES", 4096)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the code: folder stays in tmp_path
    spec = _spec(study_folder, code=[f"{MODULE}.py", "helpers"])

    with pytest.raises(InputError, match="`code:`"):
        code_runtime_env(spec)


def test_a_refused_code_folder_is_not_left_behind(study_folder, monkeypatch, tmp_path):
    (study_folder / "helpers" / "table.bin").write_bytes(b"\0" * 5000)
    monkeypatch.setattr(cluster, "CODE_LIMIT_BYTES", 4096)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the code: folder is made
    spec = _spec(study_folder, code=[f"{MODULE}.py", "helpers"])

    with pytest.raises(InputError):
        code_runtime_env(spec)
    assert not list(tmp_path.glob(f"{CODE_PREFIX}*"))


def test_a_study_without_code_of_its_own_ships_nothing():
    spec = parse_spec({
        "name": "builtin",
        "data": {"source": "digits"},
        "model": {"arch": "mlp", "hidden": [16]},
        "train": {"epochs": 1, "lr": {"loguniform": [1e-2, 0.3]}},
    })
    assert not spec.own_code
    assert code_runtime_env(spec) is None
