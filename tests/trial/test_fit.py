"""hpo's own loop as a trainable (``hpo.trial.train.fit``) and the trial's folder: weights kept
whole where the trial has a folder, and no folder made for a trial that keeps none."""

from __future__ import annotations

import io

import pytest
import torch

from hpo.config.spec import parse_spec
from hpo.data.dataset import load_dataset
from hpo.trial.contract import Trial, TrialStopped
from hpo.trial.train import WEIGHTS_FILE, fit, kept_model, train_trial


@pytest.fixture(scope="module")
def data():
    spec = parse_spec({"data": {"source": "digits", "preprocess": ["zero_center", "normalize"]}})
    return load_dataset(spec.data, seed=0)


def params(lr=0.05):
    spec = parse_spec({"model": {"hidden": [32], "activation": "relu"},
                       "train": {"epochs": 2, "batch_size": 64, "lr": lr, "optimizer": "sgd"}})
    return spec.resolve({})


def trial(data, folder=None):
    return Trial.local(seed=1, data=data, metric="val_accuracy", checkpoint_dir=folder,
                       out=io.StringIO())


@pytest.fixture
def one_thread():
    """One torch thread for the test (the same reductions in both trainings), then as before."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_trial_with_a_folder_leaves_the_weights_it_trained_there(data, tmp_path, one_thread):
    folder = tmp_path / "round-1" / "trial"
    fit(params(), trial(data, folder))
    assert sorted(p.name for p in folder.iterdir()) == [WEIGHTS_FILE]  # whole: no .part left
    kept = kept_model(params(), data, folder)
    trained = train_trial(params(), data, seed=1, keep_model=True).model
    for name, value in trained.state_dict().items():
        assert torch.equal(kept.state_dict()[name], value), name


def test_a_diverged_trial_makes_no_folder(data, tmp_path):
    folder = tmp_path / "round-1" / "trial"
    with pytest.raises(TrialStopped):
        fit(params(lr=1e6), trial(data, folder))
    assert not folder.exists() and not folder.parent.exists()


def test_a_trial_without_a_folder_writes_nothing(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit(params(), trial(data))
    assert list(tmp_path.iterdir()) == []


def test_the_folder_is_made_when_user_code_first_reads_it(tmp_path):
    folder = tmp_path / "a" / "b"
    handle = trial(None, folder)
    assert not folder.exists()
    assert handle.checkpoint_dir == folder and folder.is_dir()


def test_a_folder_that_cannot_be_made_ends_the_trial_as_it_trained(data, tmp_path):
    """The weights only spare the final evaluation a retrain: no folder, no weights, no error."""
    (tmp_path / "round-1").write_text("a file where the round's folder would be")
    folder = tmp_path / "round-1" / "trial"
    handle = trial(data, folder)
    fit(params(), handle)
    assert handle.reported("val_accuracy") and not folder.exists()
