"""Coarse-to-fine on real Ray and MLflow: an lr range decades too low walks up to the optimum."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from hpo.config.spec import parse_spec
from hpo.study.run import run_study

pytestmark = pytest.mark.slow


def study(name: str, lr: list[float], rounds: int) -> dict:
    return {
        "name": name,
        "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
        "model": {"hidden": [64], "activation": "relu", "init": "he", "batchnorm": False},
        "train": {"epochs": 5, "optimizer": "sgd", "lr": {"loguniform": lr}},
        "search": {"rounds": rounds, "trials_per_round": 6, "widen": 100,
                   "min_improvement": 0.0},
        "sanity": {"enabled": False},
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("c2f")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    lost = run_study(parse_spec(study("lost", [1e-7, 1e-5], rounds=4)), tracking_uri=uri,
                     quiet=True, study_root=folder)
    good = run_study(parse_spec(study("good", [1e-3, 1.0], rounds=1)), tracking_uri=uri,
                     quiet=True, study_root=folder)
    return lost, good, uri


def test_the_lr_range_walks_up_round_by_round(results):
    lost, _, _ = results
    highs = [r.ranges["lr"].high for r in lost.rounds]
    assert highs == sorted(highs) and highs[-1] >= 1.0  # each round reaches higher
    reasons = [c.reason for r in lost.rounds[:-1] for c in r.changes]
    assert all(reason == "widened-high" for reason in reasons)


def test_rounds_reach_what_a_well_specified_range_does(results):
    lost, good, _ = results
    first = lost.rounds[0].best_metric
    final = lost.best.metric("val_accuracy")
    well = good.best.metric("val_accuracy")
    assert first < 0.3  # the first round alone stays far below
    assert final >= well - 0.03 and final > 0.9


def test_rounds_are_nested_runs_with_ranges_reasons_and_plots(results):
    lost, _, uri = results
    client = MlflowClient(tracking_uri=uri)
    for summary in lost.rounds:
        run = client.get_run(summary.run_id)
        assert run.data.tags["mlflow.parentRunId"] == lost.study_run_id
        assert run.data.params["range.lr"].startswith("log [")
        artifacts = {a.path for a in client.list_artifacts(summary.run_id)}
        assert f"round_{summary.index}.png" in artifacts
        if summary.index < len(lost.rounds):
            path = client.download_artifacts(summary.run_id, "refinement.json")
            with open(path) as fh:
                (change,) = json.load(fh)
            assert change["parameter"] == "lr" and change["reason"] == "widened-high"
            assert change["new"]["loguniform"][1] > change["old"]["loguniform"][1]
