"""The shipped MNIST and CIFAR-10 studies: they validate, and run end to end on tiny fixtures.

The study files download the real data; here ``data.path`` points at tiny files in the same
formats instead, and rounds, trials and epochs shrink so that a run takes seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpo.config.spec import load_spec, parse_spec
from tests.fixtures.data_files import write_cifar10, write_mnist

ROOT = Path(__file__).resolve().parents[2]
STUDIES = {
    "mnist_mlp.yaml": ("mnist", lambda folder: write_mnist(folder, train_per_class=10)),
    "cifar10_convnet.yaml": ("cifar10", lambda folder: write_cifar10(folder, per_class=2)),
}


def on_fixture(name: str, tmp_path: Path) -> dict:
    """The study file's contents, reading a tiny fixture and searching for seconds."""
    source, write = STUDIES[name]
    raw = yaml.safe_load((ROOT / "search_spaces" / name).read_text())
    assert raw["data"]["source"] == source
    raw["data"].update(path=str(write(tmp_path / source)), download=False)
    raw["train"].update(epochs=1)
    raw["search"].update(rounds=1, trials_per_round=2, max_concurrent_trials=1)
    raw["sanity"] = {"enabled": False}  # babysitting has its own tests; noise images fail it
    return raw


@pytest.mark.parametrize("name", list(STUDIES))
def test_study_file_validates_as_shipped_and_on_the_fixture(name, tmp_path):
    shipped = load_spec(ROOT / "search_spaces" / name)
    assert shipped.data.download and shipped.data.path is None  # fetched on first use
    raw = on_fixture(name, tmp_path)
    spec = parse_spec(raw)
    assert spec.data.path == raw["data"]["path"] and not spec.data.download


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDIES))
def test_study_runs_end_to_end_on_the_tiny_fixture(name, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(on_fixture(name, tmp_path)))
    command = [sys.executable, "-m", "hpo"]
    checked = subprocess.run([*command, "validate", str(space)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, check=False)
    assert checked.returncode == 0, checked.stderr
    run = subprocess.run([*command, "search", str(space), "--tracking-uri",
                          f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    shape = "(1, 28, 28)" if name.startswith("mnist") else "(3, 32, 32)"
    assert f"input {shape}, 10 classes" in out and "test as given by the data" in out, out
