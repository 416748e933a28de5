"""A finished study, read back through the MLflow client the way a user would.

One small study runs through the CLI into a sqlite store; the tests then read, through
``MlflowClient`` and ``mlflow.pytorch`` only, the run tree, every run's params, the per-epoch
metric histories, the artifacts, and the logged model, and hold them against what the trainer
produces for the same configuration and seed.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from hpo.data.dataset import Preprocessor, load_dataset
from hpo.report.tables import fmt_range
from hpo.config.spec import load_spec
from hpo.tracking.store import _param_value
from hpo.trial.train import train_trial
from tests.fixtures.runs import runs_by_kind

pytestmark = pytest.mark.slow

NAME = "readback"
STUDY = {
    "name": NAME,
    "seed": 5,
    "data": {"source": "digits", "preprocess": ["zero_center", "normalize"],
             "test_fraction": 0.2},
    "model": {"hidden": [32], "activation": {"choice": ["relu", "tanh"]}, "init": "he",
              "batchnorm": {"choice": [True, False]}},
    "train": {"epochs": 2, "lr": {"loguniform": [1e-2, 0.3]}, "batch_size": 64},
    "search": {"rounds": 2, "trials_per_round": 3, "sampler": "random"},
    "sanity": {"enabled": False},  # the checks are not what this file reads back
}
ROUNDS, TRIALS, EPOCHS = 2, 3, 2
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "gap", "diverged",
                 "update_ratio")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(folder, uri, client, {kind: [runs]}) of one finished study; the store is also MLflow's
    global tracking URI meanwhile: ``runs:/`` URIs and listing a logged model's folder resolve
    the model through it, whatever the client's own tracking_uri (MLflow 3.17)."""
    import mlflow

    folder = tmp_path_factory.mktemp("readback")
    (folder / "space.yaml").write_text(yaml.safe_dump(STUDY))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    run = subprocess.run([sys.executable, "-m", "hpo", "search", "space.yaml", "--tracking-uri",
                          uri, "--quiet"], check=False, cwd=folder, capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    client = MlflowClient(tracking_uri=uri)
    kinds = runs_by_kind(uri, NAME)
    unfinished = {t.info.run_name: (t.info.status, t.data.tags.get("hpo.status"),
                                    t.data.tags.get("hpo.error"))
                  for t in kinds.get("trial", []) if t.info.status != "FINISHED"
                  or t.data.tags.get("hpo.status") in ("failed", "running")}
    assert not unfinished, (f"trials that did not finish (run status, hpo.status, hpo.error): "
                            f"{unfinished}\n{run.stderr[-3000:]}")
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    yield folder, uri, client, kinds
    mlflow.set_tracking_uri(before)  # None: back to MLflow's default


@pytest.fixture(scope="module")
def best(study):
    """The best trial's run, its configuration, the data, and the trainer's outcome for it."""
    folder, _, _, kinds = study
    spec = load_spec(folder / "space.yaml")
    best_name = kinds["study"][0].data.tags["hpo.best_trial"]
    run = next(t for t in kinds["trial"] if t.data.tags["hpo.trial"] == best_name)
    best_spec = load_spec(folder / "hpo_runs" / NAME / "best.yaml")
    params = best_spec.resolve({})
    data = load_dataset(spec.data, seed=spec.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trials ran: resources_per_trial.cpu = 1
    try:
        outcome = train_trial(params, data, seed=spec.seed, keep_model=True)
    finally:
        torch.set_num_threads(threads)
    return run, params, data, outcome


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Every file under ``path``, recursively (list_artifacts lists one level)."""
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


# -- the tree ------------------------------------------------------------------------------


def test_tree_is_study_then_rounds_then_trials(study):
    _, _, _, kinds = study
    assert set(kinds) == {"study", "round", "trial"}
    (study_run,) = kinds["study"]
    assert study_run.info.run_name == NAME and study_run.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in study_run.data.tags
    rounds = {r.info.run_id: r for r in kinds["round"]}
    assert sorted(r.info.run_name for r in rounds.values()) == [f"round {k}"
                                                               for k in range(1, ROUNDS + 1)]
    for r in rounds.values():
        assert r.data.tags["mlflow.parentRunId"] == study_run.info.run_id
        assert r.info.run_name == f"round {r.data.tags['hpo.round']}"
        assert r.info.status == "FINISHED"
    names = []
    for t in kinds["trial"]:
        parent = rounds[t.data.tags["mlflow.parentRunId"]]  # every trial hangs under a round
        assert t.data.tags["hpo.round"] == parent.data.tags["hpo.round"]
        assert t.data.tags["hpo.trial"].startswith(f"{parent.data.tags['hpo.round']}-")
        assert t.info.status == "FINISHED"
        assert t.data.tags["hpo.status"] in ("ok", "overfitting", "underfitting", "diverged")
        assert t.data.tags["hpo.flags"]
        names.append(t.data.tags["hpo.trial"])
    assert sorted(names) == [f"{k}-{i:02d}" for k in range(1, ROUNDS + 1)
                             for i in range(1, TRIALS + 1)]
    assert study_run.data.tags["hpo.trials"] == str(ROUNDS * TRIALS)
    assert study_run.data.tags["hpo.best_trial"] in names
    note = study_run.data.tags["mlflow.note.content"]
    assert f"Study **{NAME}**" in note and study_run.data.tags["hpo.best_trial"] in note


# -- params --------------------------------------------------------------------------------


def test_every_run_logs_its_parameters(study):
    folder, _, _, kinds = study
    spec = load_spec(folder / "space.yaml")
    searched = spec.distributions()
    (study_run,) = kinds["study"]
    assert {k: study_run.data.params[k] for k in spec.fixed()} == {
        k: _param_value(v) for k, v in spec.fixed().items()}
    assert study_run.data.params["search.metric"] == "val_accuracy"
    assert study_run.data.params["search.rounds"] == str(ROUNDS)
    round_one = next(r for r in kinds["round"] if r.data.tags["hpo.round"] == "1")
    assert round_one.data.params == {f"range.{n}": fmt_range(d) for n, d in searched.items()}
    for t in kinds["trial"]:
        p = t.data.params
        sampled = {"activation": p["activation"], "batchnorm": p["batchnorm"] == "True",
                   "lr": float(p["lr"])}
        resolved = spec.resolve(sampled)
        # every resolved hyperparameter, exactly as the trainer received it (to 6 digits)
        assert p == {k: _param_value(v) for k, v in resolved.items()}
        # a name that reads well in the UI: "trial 1-02 lr=2.7e-01 tanh/he/bn"
        bn = "bn" if sampled["batchnorm"] else "nobn"
        label = re.fullmatch(rf"trial {t.data.tags['hpo.trial']} lr=(\S+) "
                             rf"{p['activation']}/{p['init']}/{bn}", t.info.run_name)
        assert label, t.info.run_name
        assert float(label[1]) == pytest.approx(sampled["lr"], rel=0.06)  # 2 significant digits


# -- metric histories ----------------------------------------------------------------------


def test_trial_metric_histories_have_one_point_per_epoch(study):
    _, _, client, kinds = study
    for t in kinds["trial"]:
        epochs = int(t.data.tags["hpo.epochs"])
        if t.data.tags["hpo.status"] == "diverged":
            assert t.data.metrics["diverged"] == 1.0 and epochs <= EPOCHS
            continue
        assert epochs == EPOCHS
        for key in EPOCH_METRICS:
            history = client.get_metric_history(t.info.run_id, key)
            assert [m.step for m in history] == list(range(1, EPOCHS + 1)), (t.info.run_name, key)
            assert all(math.isfinite(m.value) for m in history)
        # per-layer update ratios every epoch, activation statistics once at the end
        layered = [k for k in t.data.metrics if k.startswith("update_ratio.")]
        assert layered and all(len(client.get_metric_history(t.info.run_id, k)) == EPOCHS
                               for k in layered)
        acts = [k for k in t.data.metrics if k.startswith("act.")]
        assert acts and all([m.step for m in client.get_metric_history(t.info.run_id, k)]
                            == [EPOCHS] for k in acts)
        for h in client.get_metric_history(t.info.run_id, "val_accuracy"):
            assert 0.0 <= h.value <= 1.0


def test_best_trial_history_is_what_the_trainer_reports(study, best):
    _, _, client, _ = study
    run, _, _, outcome = best
    assert outcome.status == "ok"
    for key in EPOCH_METRICS:
        logged = [m.value for m in client.get_metric_history(run.info.run_id, key)]
        assert logged == pytest.approx([h[key] for h in outcome.history], rel=1e-9, abs=1e-12), key


def test_study_metrics_summarise_the_best_trial(study, best):
    _, _, _, kinds = study
    (study_run,) = kinds["study"]
    run, _, _, _ = best
    m = study_run.data.metrics
    assert m["best_val_accuracy"] == run.data.metrics["val_accuracy"]
    assert m["best_val_accuracy"] == max(t.data.metrics["val_accuracy"] for t in kinds["trial"])
    for key in ("final_test_accuracy", "ensemble_test_accuracy"):
        assert 0.0 <= m[key] <= 1.0
    for r in kinds["round"]:
        trials = [t for t in kinds["trial"] if t.data.tags["mlflow.parentRunId"] == r.info.run_id]
        assert r.data.metrics["best_val_accuracy"] == max(t.data.metrics["val_accuracy"]
                                                         for t in trials)


# -- artifacts -----------------------------------------------------------------------------


def test_study_artifacts(study, tmp_path):
    folder, _, client, kinds = study
    (study_run,) = kinds["study"]
    rid = study_run.info.run_id
    files = _artifacts(client, rid)
    assert {"study.yaml", "best.yaml", "report.md", "model/MLmodel",
            "model/preprocess.npz", "model/preprocess.md"} <= files
    plots = {f for f in files if f.startswith("plots/")}
    assert {f"plots/round_{k}.png" for k in range(1, ROUNDS + 1)} | {
        "plots/learning_curves.png", "plots/activations_best.png",
        "plots/parallel_coordinate.png", "plots/param_importances.png"} <= plots
    for name in plots:
        assert Path(client.download_artifacts(rid, name, str(tmp_path))).read_bytes()[:8] == PNG

    def text(name: str) -> str:
        return Path(client.download_artifacts(rid, name, str(tmp_path))).read_text()

    # study.yaml is the resolved study; best.yaml re-runs the best trial's configuration
    assert (load_spec_text(text("study.yaml"), tmp_path).to_dict()
            == load_spec(folder / "space.yaml").to_dict())
    best_spec = load_spec_text(text("best.yaml"), tmp_path)
    assert best_spec.distributions() == {}
    best_name = study_run.data.tags["hpo.best_trial"]
    best_run = next(t for t in kinds["trial"] if t.data.tags["hpo.trial"] == best_name)
    assert {k: _param_value(v) for k, v in best_spec.resolve({}).items()} == best_run.data.params
    report = text("report.md")
    assert report.startswith(f"# Study {NAME}") and best_name in report


def load_spec_text(text: str, tmp_path: Path):
    path = tmp_path / "spec_from_mlflow.yaml"
    path.write_text(text)
    return load_spec(path)


def test_round_artifacts(study, tmp_path):
    _, _, client, kinds = study
    for r in kinds["round"]:
        k = int(r.data.tags["hpo.round"])
        files = _artifacts(client, r.info.run_id)
        assert f"round_{k}.png" in files
        if k < ROUNDS:  # the refinement that led to the next round
            path = client.download_artifacts(r.info.run_id, "refinement.json", str(tmp_path))
            changes = json.loads(Path(path).read_text())
            assert isinstance(changes, list)
            assert all({"parameter", "old", "new", "reason", "best"} <= set(c) for c in changes)
        else:
            assert "refinement.json" not in files


# -- the logged model ----------------------------------------------------------------------


def test_logged_model_predicts_what_the_trainer_predicts(study, best, tmp_path):
    import mlflow
    import mlflow.pytorch

    _, _, _, kinds = study
    (study_run,) = kinds["study"]
    _, _, data, outcome = best
    model_uri = f"runs:/{study_run.info.run_id}/model"
    logged = mlflow.pytorch.load_model(model_uri)
    trained = outcome.model.eval()
    with torch.no_grad():
        for x in (data.x_test, data.x_val[:1], data.x_val):  # batch sizes other than the example's
            ours = trained(torch.from_numpy(np.array(x)))  # (N, classes)
            theirs = logged(torch.from_numpy(np.array(x)))
            torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
            assert torch.equal(theirs.argmax(1), ours.argmax(1))
        accuracy = float((logged(torch.from_numpy(np.array(data.x_test))).argmax(1)
                          == torch.from_numpy(np.array(data.y_test))).float().mean())
    assert accuracy == pytest.approx(study_run.data.metrics["final_test_accuracy"], abs=1e-6)

    # the pyfunc flavour, its signature and input example agree with the same model
    local = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path))
    pyfunc = mlflow.pyfunc.load_model(local)
    (inputs,) = pyfunc.metadata.get_input_schema().inputs
    assert inputs.shape == (-1, *data.input_shape)
    (outputs,) = pyfunc.metadata.get_output_schema().inputs
    assert outputs.shape == (-1, data.num_classes)
    example = pyfunc.metadata.load_input_example(local)
    np.testing.assert_array_equal(example, data.x_val[:5])
    with torch.no_grad():
        expected = trained(torch.from_numpy(np.array(example))).numpy()
    np.testing.assert_allclose(pyfunc.predict(example), expected, rtol=0, atol=1e-5)


def test_logged_preprocessing_turns_raw_inputs_into_model_inputs(study, best, tmp_path):
    """model/preprocess.npz + the model = predictions from examples as the source loads them."""
    import mlflow.pytorch

    from hpo.data.dataset import load_raw

    folder, _, client, kinds = study
    (study_run,) = kinds["study"]
    _, _, data, outcome = best
    path = client.download_artifacts(study_run.info.run_id, "model/preprocess.npz",
                                     str(tmp_path))
    pre = Preprocessor.load(path)
    raw = load_raw(load_spec(folder / "space.yaml").data).x  # every example, as loaded
    np.testing.assert_array_equal(pre.transform(raw), data.preprocessor.transform(raw))
    logged = mlflow.pytorch.load_model(f"runs:/{study_run.info.run_id}/model")
    with torch.no_grad():
        ours = outcome.model.eval()(torch.from_numpy(data.preprocessor.transform(raw)))
        theirs = logged(torch.from_numpy(pre.transform(raw)))
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    assert torch.equal(theirs.argmax(1), ours.argmax(1))
