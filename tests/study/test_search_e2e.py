"""End to end: `hpo search` on real Ray and a real MLflow store, read back through MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from hpo.config.spec import load_spec
from hpo.space.bridge import decode, make_sampler, optuna_space, round_seed

from tests.fixtures.cli import run_hpo as hpo
from tests.fixtures.runs import runs_by_kind

pytestmark = pytest.mark.slow

EXPERIMENT = "e2e-digits"
STUDY = {
    "name": EXPERIMENT,
    "seed": 3,
    "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
    "model": {"hidden": [32], "activation": {"choice": ["relu", "tanh"]}, "init": "he",
              "batchnorm": {"choice": [True, False]}},
    "train": {"epochs": 3, "lr": {"loguniform": [1e-2, 0.5]}, "batch_size": 64},
    "search": {"rounds": 2, "trials_per_round": 4, "sampler": "random"},
}
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "gap")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump(STUDY))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    run = hpo("search", str(space), "--tracking-uri", uri, cwd=folder)
    assert run.returncode == 0, run.stdout + run.stderr
    return folder, uri, run


def test_run_tree_study_rounds_trials(study):
    _, uri, _ = study
    kinds = runs_by_kind(uri, EXPERIMENT)
    assert len(kinds["study"]) == 1 and len(kinds["round"]) == 2 and len(kinds["trial"]) == 8
    study_run = kinds["study"][0]
    assert study_run.info.status == "FINISHED"
    rounds = {r.info.run_id: r for r in kinds["round"]}
    assert all(r.data.tags["mlflow.parentRunId"] == study_run.info.run_id for r in rounds.values())
    per_round = {r.data.tags["hpo.round"]: 0 for r in rounds.values()}
    for t in kinds["trial"]:
        parent = rounds[t.data.tags["mlflow.parentRunId"]]
        assert parent.data.tags["hpo.round"] == t.data.tags["hpo.round"]
        per_round[t.data.tags["hpo.round"]] += 1
        assert t.data.tags["hpo.status"] in ("ok", "overfitting", "underfitting", "diverged")
        assert t.info.status == "FINISHED"
    assert per_round == {"1": 4, "2": 4}


def test_trials_log_every_resolved_param_and_metrics_per_epoch(study):
    _, uri, _ = study
    client = MlflowClient(tracking_uri=uri)
    spec_fields = set(load_spec_dict()["model"]) | set(load_spec_dict()["train"])
    for t in runs_by_kind(uri, EXPERIMENT)["trial"]:
        assert spec_fields <= set(t.data.params), spec_fields - set(t.data.params)
        assert t.data.params["hidden"] == "[32]" and t.data.params["epochs"] == "3"
        assert 1e-2 <= float(t.data.params["lr"]) <= 0.5
        if t.data.tags["hpo.status"] == "diverged":
            continue
        for key in EPOCH_METRICS:
            history = client.get_metric_history(t.info.run_id, key)
            assert [m.step for m in history] == [1, 2, 3], key
        acc = client.get_metric_history(t.info.run_id, "val_accuracy")
        assert all(0.0 <= m.value <= 1.0 for m in acc)


def load_spec_dict() -> dict:
    from hpo.config.spec import parse_spec

    return parse_spec(STUDY).to_dict()


def test_round_one_configs_are_the_seeded_samplers(study):
    """The study's first round samples exactly what the seeded sampler gives for its seed."""
    _, uri, _ = study
    spec = load_spec_path(study[0])
    ranges = spec.distributions()
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space=optuna_space(ranges), metric="val_accuracy", mode="max",
                            sampler=make_sampler("random", round_seed(spec.seed, 1), 4))
    expected = [decode(ranges, searcher.suggest(f"t{i}")) for i in range(4)]
    trials = [t for t in runs_by_kind(uri, EXPERIMENT)["trial"]
              if t.data.tags["hpo.round"] == "1"]
    trials.sort(key=lambda t: t.data.tags["hpo.trial"])
    got = [(t.data.params["activation"], t.data.params["batchnorm"], float(t.data.params["lr"]))
           for t in trials]
    want = [(c["activation"], str(c["batchnorm"]), c["lr"]) for c in expected]
    for (a, b, lr), (wa, wb, wlr) in zip(got, want):
        assert (a, b) == (wa, wb) and lr == pytest.approx(wlr, rel=1e-5)


def load_spec_path(folder: Path):
    return load_spec(folder / "space.yaml")


def test_best_yaml_is_logged_and_reproduces_the_best_trial(study):
    folder, uri, run = study
    kinds = runs_by_kind(uri, EXPERIMENT)
    study_run = kinds["study"][0]
    artifacts = [a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(
        study_run.info.run_id)]
    assert "best.yaml" in artifacts and "study.yaml" in artifacts
    best_path = folder / "hpo_runs" / "e2e-digits" / "best.yaml"
    best = load_spec(best_path)
    assert best.distributions() == {}
    best_name = study_run.data.tags["hpo.best_trial"]
    best_trial = next(t for t in kinds["trial"] if t.data.tags["hpo.trial"] == best_name)
    assert best.model["activation"] == best_trial.data.params["activation"]
    best_acc = study_run.data.metrics["best_val_accuracy"]
    assert best_acc == pytest.approx(best_trial.data.metrics["val_accuracy"])
    assert best_acc == max(t.data.metrics.get("val_accuracy", 0) for t in kinds["trial"])

    # the terminal: the best configuration, its accuracy, and how to open the UI
    assert f"val_accuracy = {best_acc:.4f}" in run.stdout
    assert f"hpo ui --tracking-uri {uri}" in run.stdout and "top " in run.stdout

    again = hpo("train", str(best_path), "--tracking-uri", uri, "--quiet", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert f"val_accuracy {best_acc:.4f}" in again.stdout  # same seed, same result on CPU


def test_the_best_trials_keep_their_weights_and_the_final_evaluation_loads_them(study):
    """Only the top 3 trials' weights stay on disk; the final evaluation's models loaded from
    them are the models a retrain in the driver gives, parameter for parameter (on CPU)."""
    import torch

    from hpo.data.dataset import load_dataset
    from hpo.execution.round import trial_folder
    from hpo.study.final import ENSEMBLE_TOP_K, evaluate_final
    from hpo.tracking.journal import Journal
    from hpo.trial.record import ranked
    from hpo.trial.train import WEIGHTS_FILE

    folder, uri, _ = study
    study_folder = folder / "hpo_runs" / EXPERIMENT
    past = Journal(study_folder / "journal.jsonl").replay()
    records = [r for k in (1, 2) for r in past.round_records(k)]
    best = ranked(records, metric="val_accuracy", mode="max")
    assert len(best) >= ENSEMBLE_TOP_K
    kept = sorted(p.parent.name for p in (study_folder / "checkpoints").glob(f"*/*/{WEIGHTS_FILE}"))
    spec = load_spec_path(folder)
    assert kept == sorted(trial_folder(study_folder, r.round, r.sampled).name
                          for r in best[:ENSEMBLE_TOP_K])
    folders = sorted(p.name for p in (study_folder / "checkpoints").glob("*/*"))
    assert folders == kept  # a dropped trial's folder went with its weights

    data = load_dataset(spec.data, seed=spec.seed)
    loaded = evaluate_final(spec, data, best, study_folder)
    retrained = evaluate_final(spec, data, best, None)
    assert loaded.best_accuracy == retrained.best_accuracy
    assert loaded.ensemble_accuracy == retrained.ensemble_accuracy
    for a, b in zip(loaded.model.state_dict().values(), retrained.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    final = runs_by_kind(uri, EXPERIMENT)["study"][0].data.metrics
    assert final["final_val_accuracy"] == pytest.approx(loaded.best_accuracy)


def test_tune_keeps_only_what_it_needs_of_finished_trials(study):
    """Tune holds every trial of a round until it ends; once hpo has journaled a trial, Tune
    keeps neither its per-epoch metrics nor its running statistics (its saved state says so),
    while the journal keeps the full history."""
    import json

    from hpo.tracking.journal import Journal

    folder, _, _ = study
    runs = folder / "hpo_runs" / EXPERIMENT
    history = {r.trial_id: r.history for r in Journal(runs / "journal.jsonl").replay()
               .round_records(1)}
    [saved] = (runs / "ray" / "round-1").glob("experiment_state-*.json")
    trials = [json.loads(meta) for _, meta in json.loads(saved.read_text())["trial_data"]]
    assert len(trials) == 4
    for meta in trials:
        last = meta["last_result"]
        assert "epochs" not in last and meta["metric_analysis"] == meta["metric_n_steps"] == {}
        assert last["training_iteration"] >= 1 and "val_accuracy" in last  # the rest is there
        assert len(history[last["trial_id"]]) == last["epoch"]  # 3, or where it diverged


def test_unreachable_tracking_server_fails_before_any_trial(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(STUDY))
    run = hpo("search", str(space), "--tracking-uri", "http://127.0.0.1:9", cwd=tmp_path)
    assert run.returncode == 1
    assert "cannot reach the MLflow tracking store 'http://127.0.0.1:9'" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "hpo_runs" / "e2e-digits" / "ray").exists()  # no round started


def test_input_error_runs_and_logs_nothing(tmp_path):
    bad = dict(STUDY, data={"source": "npz", "path": "missing.npz"})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(bad))
    run = hpo("search", str(space), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
              cwd=tmp_path)
    assert run.returncode == 2
    assert "data.path" in run.stderr and "missing.npz" in run.stderr
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "hpo_runs").exists()
