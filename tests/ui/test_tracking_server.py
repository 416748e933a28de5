"""A tracking server that is down is found before any trial runs: exit 1, one clear line."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

STUDY = {
    "name": "server-gone",
    "data": {"source": "digits"},
    "model": {"hidden": [16]},
    "train": {"epochs": 1, "lr": {"loguniform": [1e-2, 0.3]}},
    "search": {"rounds": 1, "trials_per_round": 2},
    "sanity": {"enabled": False},
}


def test_a_stopped_mlflow_server_fails_the_study_before_any_trial(start_mlflow_server,
                                                                  hpo_search, tmp_path):
    server = start_mlflow_server()  # a real server that answered /health on this port ...
    server.stop()  # ... and is gone
    run = hpo_search(STUDY, tmp_path, server.url)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"cannot reach the MLflow tracking store '{server.url}'" in run.stderr
    assert "--tracking-uri" in run.stderr  # says how to fix it
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "hpo_runs" / "server-gone" / "ray").exists()  # no round started
