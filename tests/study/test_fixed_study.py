"""A study with nothing searched, run for real (``hpo search`` on Ray and a sqlite store): it
runs one trial, says so instead of silently ignoring ``trials_per_round`` and ``rounds``, and
its last line says how to open the UI on that store."""

from __future__ import annotations

import pytest
import yaml

from tests.fixtures.cli import run_hpo
from tests.fixtures.runs import runs_by_kind

pytestmark = pytest.mark.slow

NAME = "fixed-study"
STUDY = {
    "name": NAME,
    "seed": 2,
    "data": {"source": "digits"},
    "model": {"hidden": [16], "activation": "relu"},
    "train": {"epochs": 1, "lr": 0.05},
    "search": {"rounds": 2, "trials_per_round": 2},
    "sanity": {"enabled": False},
}


def test_a_fixed_study_says_it_runs_one_trial_and_how_to_open_the_ui(tmp_path):
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(STUDY))
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    run = run_hpo("search", "space.yaml", "--tracking-uri", uri, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    said = "nothing is searched: one trial per round (search.trials_per_round 2 does not apply)"
    assert f"{said} and one round (search.rounds 2 does not apply)" in run.stdout
    assert run.stdout.count("nothing is searched") == 1  # once, at the start of the rounds
    kinds = runs_by_kind(uri, NAME)
    assert len(kinds["round"]) == 1 and len(kinds["trial"]) == 1
    # the last line: hpo ui on this store (not mlflow ui, not the default store)
    last = run.stdout.rstrip().splitlines()[-1]
    assert last.startswith("MLflow UI: ") and last.endswith(f"hpo ui --tracking-uri {uri}"), last
