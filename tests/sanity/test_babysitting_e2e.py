"""Babysitting through the CLI, on real Ray and a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.fixtures.cli import run_hpo as hpo

pytestmark = pytest.mark.slow

BASE = {
    "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
    "model": {"hidden": [32], "activation": "relu", "init": "he"},
    "train": {"epochs": 2, "lr": {"loguniform": [1e-2, 1e-1]}},
    "search": {"rounds": 1, "trials_per_round": 3},
}


def write(tmp_path: Path, name: str, **sections) -> Path:
    study = {"name": name, **BASE}
    for key, value in sections.items():
        study[key] = {**study.get(key, {}), **value}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def runs(uri: str, name: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_check_command_passes_a_healthy_setup_and_fails_a_broken_one(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    ok = hpo("check", str(write(tmp_path, "healthy")), "--tracking-uri", uri, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("pass") == 5 and "FAIL" not in ok.stdout

    broken = write(tmp_path, "broken", model={"init": "normal", "init_std": 10.0})
    bad = hpo("check", str(broken), "--tracking-uri", uri, cwd=tmp_path)
    assert bad.returncode == 1
    assert "FAIL" in bad.stdout and "initialized too large" in bad.stdout
    (run,) = runs(uri, "broken")
    assert run.data.tags["hpo.sanity"] == "failed"
    assert run.data.metrics["sanity.initial_loss"] > 10


def test_strict_failure_stops_the_study_before_any_trial(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    broken = write(tmp_path, "strict", model={"init": "normal", "init_std": 10.0})
    run = hpo("search", str(broken), "--tracking-uri", uri, cwd=tmp_path)
    assert run.returncode == 1
    assert "--force" in run.stderr and "Traceback" not in run.stderr
    (study,) = runs(uri, "strict")  # the study run holds the checks; no round, no trial
    assert study.data.tags["hpo.kind"] == "study" and study.info.status == "FAILED"
    assert study.data.tags["hpo.sanity"] == "failed"
    artifacts = [a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(study.info.run_id)]
    assert "sanity.md" in artifacts


def test_diverging_trials_are_tagged_and_the_study_finishes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    space = write(tmp_path, "diverge", train={"lr": {"loguniform": [1e-2, 1e4]},
                                              "optimizer": "sgd", "epochs": 3},
                  search={"trials_per_round": 6}, sanity={"enabled": False})
    run = hpo("search", str(space), "--tracking-uri", uri, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    trials = [r for r in runs(uri, "diverge") if r.data.tags.get("hpo.kind") == "trial"]
    assert len(trials) == 6  # no trial goes missing
    diverged = [t for t in trials if t.data.tags["hpo.status"] == "diverged"]
    assert diverged and len(diverged) < 6
    client = MlflowClient(tracking_uri=uri)
    for t in diverged:
        assert float(t.data.params["lr"]) > 1.0
        steps = client.get_metric_history(t.info.run_id, "diverged")
        assert len(steps) < 3 and steps[-1].value == 1.0  # stopped before its last epoch
    assert "diverged (loss exploded) at lr" in run.stdout
    (study,) = [r for r in runs(uri, "diverge") if r.data.tags.get("hpo.kind") == "study"]
    assert study.info.status == "FINISHED"
    assert int(study.data.tags["hpo.trials.diverged"]) == len(diverged)
