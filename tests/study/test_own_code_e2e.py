"""Your own code, end to end: the shipped studies of each level, and a trainable that breaks.

Each study runs through the Python API (``hpo.search``) in a Python process of its own, as a
user's script would, on the local Ray it starts; the user's modules sit beside their study files
and are installed nowhere.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.fixtures.cli import run_hpo
from tests.fixtures.runs import runs_by_kind

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SPACES = ROOT / "search_spaces"


# A user's script: hpo.search on a study (cut down where asked), its result as JSON.
SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import hpo

    path, uri, root, trials, epochs = sys.argv[1:6]
    spec = hpo.load_spec(path)
    if trials != "-":
        spec = dataclasses.replace(
            spec, search=dataclasses.replace(spec.search, trials_per_round=int(trials)),
            train={**spec.train, "epochs": int(epochs)})
    result = hpo.search(spec, tracking_uri=uri, quiet=True, study_root=root)
    metric = result.spec.search.metric
    print(json.dumps({
        "metric": metric, "best_metric": result.best_metric,
        "ranked": [t.metric(metric) for t in result.trials],
        "best_config": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in result.best_config.items()},
        "best_run": result.best.run_id, "run_id": result.run_id, "folder": str(result.folder),
        "records": [{k: list(v) if isinstance(v, tuple) else v for k, v in r.params.items()}
                    for r in result.records],
        "sanity": None if result.sanity is None else [c.passed for c in result.sanity],
        "activations": bool(result.final and result.final.activations)}))
""")


def search(path: Path, folder: Path, *, trials: int | None = None,
           epochs: int | None = None) -> tuple[str, dict]:
    """``hpo.search`` on the study file ``path`` in a process of its own; (MLflow URI, result)."""
    script = folder / "search.py"
    script.write_text(SCRIPT)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    run = subprocess.run([sys.executable, str(script), str(path), uri, str(folder / "runs"),
                          str(trials or "-"), str(epochs or "-")], cwd=folder,
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert run.returncode == 0, run.stderr[-3000:]
    return uri, json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def friedman(tmp_path_factory):
    folder = tmp_path_factory.mktemp("friedman")
    uri, result = search(SPACES / "own_loop" / "friedman.yaml", folder)
    return folder, uri, result


def test_a_whole_loop_of_the_users_own_is_searched_coarse_to_fine(friedman):
    folder, uri, result = friedman
    kinds = runs_by_kind(uri, "own-loop-friedman")
    assert len(kinds["round"]) == 2 and len(kinds["trial"]) == 16
    assert result["metric"] == "val_rmse" and result["best_metric"] < 0.6
    assert result["best_metric"] == min(result["ranked"]) == result["ranked"][0]
    assert set(result["best_config"]) == {"samples", "epochs", "batch_size", "width", "depth",
                                          "lr", "weight_decay"}
    assert Path(result["folder"]) == folder / "runs" / "own-loop-friedman"
    best = yaml.safe_load((Path(result["folder"]) / "best.yaml").read_text())
    assert best["trainable"] == "friedman:fit" and best["model"]["width"] == \
        result["best_config"]["width"]


def test_the_users_metrics_and_the_gap_reach_mlflow_per_epoch(friedman):
    _, uri, result = friedman
    client = MlflowClient(tracking_uri=uri)
    finished = [t for t in runs_by_kind(uri, "own-loop-friedman")["trial"]
                if t.data.tags["hpo.status"] in ("ok", "overfitting")]
    assert finished
    for t in finished:
        steps = {key: [m.step for m in client.get_metric_history(t.info.run_id, key)]
                 for key in ("val_rmse", "train_rmse", "val_loss", "gap")}
        assert all(s == list(range(1, 16)) for s in steps.values()), steps
        last = t.data.metrics
        # val_rmse is minimized: the gap is val - train, positive when training fits better
        assert last["gap"] == pytest.approx(last["val_rmse"] - last["train_rmse"])
        assert "width" in t.data.params and "activation" not in t.data.params


def test_the_best_configuration_trains_again_with_hpo_train(friedman):
    folder, uri, result = friedman
    # torch's threads in the hpo train process are not the trial's (one, as the study's cpu)
    run = run_hpo("train", str(Path(result["folder"]) / "best.yaml"), "--tracking-uri", uri,
                  cwd=SPACES / "own_loop", env={"OMP_NUM_THREADS": "3"})
    assert run.returncode == 0, run.stderr
    assert f"val_rmse {result['best_metric']:.4f} after 15 epoch(s) (ok)" in run.stdout
    client = MlflowClient(tracking_uri=uri)
    (train,) = runs_by_kind(uri, "own-loop-friedman")["train"]
    # the same computation as the trial: every epoch's metric, bit for bit
    history = [[m.value for m in sorted(client.get_metric_history(r, "val_rmse"),
                                        key=lambda m: m.step)]
               for r in (result["best_run"], train.info.run_id)]
    assert history[0] == history[1]


BROKEN = """
    import math

    def fit(config, trial):
        if config["kind"] == "raise":
            raise RuntimeError("the user's loop broke")
        for epoch in range(1, 4):
            if config["kind"] == "silent":  # reports, but never the study's metric
                trial.report(epoch=epoch, val_loss=1.0 / epoch)
            elif config["kind"] == "explode":
                trial.report(epoch=epoch, val_score=0.1, train_loss=math.inf)
            else:
                trial.report(epoch=epoch, val_score=config["x"], train_score=config["x"] + 0.25)
"""


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    (folder / "broken_loop.py").write_text(textwrap.dedent(BROKEN))
    study = {"name": "own-broken", "seed": 2, "trainable": "broken_loop:fit",
             "model": {"kind": {"choice": ["ok", "raise", "silent", "explode"]},
                       "x": {"uniform": [0.0, 1.0]}},
             "search": {"metric": "val_score", "mode": "max", "rounds": 1,
                        "trials_per_round": 12, "max_failures": 0},
             "gap": {"threshold": 0.2}}
    (folder / "study.yaml").write_text(yaml.safe_dump(study))
    return search(folder / "study.yaml", folder)


def test_a_trial_that_breaks_the_contract_fails_and_the_study_goes_on(broken):
    uri, result = broken
    trials = runs_by_kind(uri, "own-broken")["trial"]
    by_kind: dict[str, list] = {}
    for t in trials:
        by_kind.setdefault(t.data.params["kind"], []).append(t)
    assert set(by_kind) == {"ok", "raise", "silent", "explode"}, "seed 2 samples every kind"
    assert len(trials) == 12 and result["best_config"]["kind"] == "ok"
    for t in by_kind["raise"]:
        assert t.info.status == "FAILED" and t.data.tags["hpo.status"] == "failed"
        assert "the user's loop broke" in t.data.tags["hpo.error"]
    for t in by_kind["silent"]:
        assert t.info.status == "FAILED"
        assert ("trial.report(epoch=1, ...) has no 'val_score' (search.metric); it reported "
                "val_loss" in t.data.tags["hpo.error"])
    for t in by_kind["explode"]:  # a non-finite loss: diverged after its first report
        assert t.data.tags["hpo.status"] == "diverged" and t.data.tags["hpo.epochs"] == "1"
    for t in by_kind["ok"]:  # train_score 0.25 above val_score: overfitting at threshold 0.2
        assert t.data.tags["hpo.status"] == "overfitting"
        assert t.data.metrics["gap"] == pytest.approx(0.25)
    assert math.isclose(result["best_metric"], max(t.data.metrics["val_score"]
                                                 for t in by_kind["ok"]))


def test_a_network_of_the_users_own_is_trained_by_hpos_loop(tmp_path):
    uri, result = search(SPACES / "own_model" / "resnet.yaml", tmp_path, trials=4, epochs=3)
    assert result["best_metric"] > 0.8
    assert result["sanity"] and all(result["sanity"])
    client = MlflowClient(tracking_uri=uri)
    best = client.get_run(result["best_run"])
    assert best.data.params["builder"] == "resnet:build" and "depth" in best.data.params
    # the residual blocks' activations come from models.activation: their statistics too
    assert any(key.startswith("act.layer") for key in best.data.metrics)
    assert result["activations"]
    import mlflow  # a logged model's folder resolves through the global tracking URI

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        files = {f.path for f in client.list_artifacts(result["run_id"], "model")}
    finally:
        mlflow.set_tracking_uri(previous)
    assert "model/MLmodel" in files  # the best network, logged by MLflow


def test_data_of_the_users_own_is_split_and_searched(tmp_path):
    uri, result = search(SPACES / "own_data" / "moons.yaml", tmp_path, trials=4, epochs=5)
    assert result["best_metric"] > 0.8
    study = runs_by_kind(uri, "own-data-moons")["study"][0]
    assert study.data.params["search.data.source"] == "python"
    assert len(result["records"]) == 8 and all(r["hidden"] == [32, 32]
                                               for r in result["records"])


def test_a_study_file_named_by_a_relative_path_finds_its_code_in_every_trial(tmp_path):
    """Trials run in Tune's folders: the study file's folder is resolved where hpo starts."""
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "tiny_loop.py").write_text(textwrap.dedent("""
        def fit(config, trial):
            trial.report(epoch=1, val_score=config["x"])
    """))
    (folder / "study.yaml").write_text(yaml.safe_dump({
        "name": "own-relative", "trainable": "tiny_loop:fit",
        "model": {"x": {"uniform": [0.0, 1.0]}},
        "search": {"metric": "val_score", "mode": "max", "rounds": 1, "trials_per_round": 2}}))
    run = run_hpo("search", "study/study.yaml", "--tracking-uri",
                  f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    trials = runs_by_kind(f"sqlite:///{tmp_path / 'mlflow.db'}", "own-relative")["trial"]
    assert [t.info.status for t in trials] == ["FINISHED", "FINISHED"]
