"""``hpo train`` runs the user's ``fit`` with torch's threads as a Ray trial of the study has
them (``search.resources_per_trial.cpu``), whatever the process had: a float32 matmul splits its
work by thread, so another count changes the last bits, and training amplifies them (a retrain
of best.yaml then misses the trial's metric). Real runs: hpo.train on a sqlite MLflow store."""

from __future__ import annotations

import textwrap

import pytest
import torch
import yaml

import hpo

LOOP = """
    import torch

    def fit(config, trial):
        trial.report(epoch=1, val_threads=torch.get_num_threads())
"""


@pytest.mark.parametrize("cpu", [1, 2])
def test_hpo_train_runs_the_users_fit_with_a_trials_threads_and_restores_them(tmp_path, cpu):
    (tmp_path / "threads_loop_retrain.py").write_text(textwrap.dedent(LOOP))
    study = {"name": "retrain-threads", "trainable": "threads_loop_retrain:fit",
             "model": {"width": 8},
             "search": {"metric": "val_threads", "mode": "min",
                        "resources_per_trial": {"cpu": cpu}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # what neither study's trial has (a Ray worker gets cpu threads)
    try:
        outcome = hpo.train(str(tmp_path / "study.yaml"), quiet=True,
                            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert [r["val_threads"] for r in outcome.history] == [cpu]
        assert torch.get_num_threads() == 3  # the caller's threads, back
    finally:
        torch.set_num_threads(before)
