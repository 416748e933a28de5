"""``Tracker`` on a real MLflow store (sqlite under tmp_path), read back with ``MlflowClient``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from mlflow.tracking import MlflowClient

from hpo.errors import RunError, TrackingUnreachable
from hpo.tracking.store import (
    DEFAULT_URI,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    Tracker,
    resolve_tracking_uri,
    runs_url,
    ui_command,
)

#: What Tracker sets in the environment (if unset): kept to this module.
TRACKER_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> Iterator[str]:
    """One sqlite store for the module (making one costs ~1.5 s); each test its experiment."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in TRACKER_ENV.items():
            mp.setenv(key, value)
        yield f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracker(store_uri, request) -> Tracker:
    t = Tracker(store_uri, f"exp-{request.node.name}")
    t.check()
    t.ensure_experiment()
    return t


@pytest.fixture
def client(store_uri) -> MlflowClient:
    return MlflowClient(tracking_uri=store_uri)


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_the_experiment_is_made_once_and_restored_if_deleted(store_uri, client):
    first = Tracker(store_uri, "made-once")
    exp_id = first.ensure_experiment()
    assert client.get_experiment(exp_id).name == "made-once"
    assert Tracker(store_uri, "made-once").ensure_experiment() == exp_id
    client.delete_experiment(exp_id)
    assert Tracker(store_uri, "made-once").ensure_experiment() == exp_id
    assert client.get_experiment(exp_id).lifecycle_stage == "active"


def test_every_experiment_hpo_makes_or_reuses_is_marked_model_training(store_uri, client):
    """MLflow 3's UIs that read ``mlflow.experimentKind`` open such an experiment on its runs
    (model training), not on GenAI traces: on a new experiment, on one made without the tag (a
    store from before), and on a deleted one that a study brings back."""
    made = Tracker(store_uri, "kind-new").ensure_experiment()
    assert client.get_experiment(made).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert EXPERIMENT_KIND == "custom_model_development"  # the value MLflow's UI code knows

    older = client.create_experiment("kind-older")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(older).tags
    assert Tracker(store_uri, "kind-older").ensure_experiment() == older
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    gone = client.create_experiment("kind-deleted", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    client.delete_experiment(gone)
    assert Tracker(store_uri, "kind-deleted").ensure_experiment() == gone
    again = client.get_experiment(gone)
    assert again.lifecycle_stage == "active" and again.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_runs_nest_under_their_parent_with_name_tags_and_params(tracker, client):
    study = tracker.start_run("study", tags={"hpo.kind": "study"})
    round_ = tracker.start_run("round 1", parent=study, tags={"hpo.kind": "round"})
    trial = tracker.start_run("trial 1-01", parent=round_, tags={"hpo.kind": "trial"},
                              params={"lr": 0.0123456789, "hidden": (64, 32), "batchnorm": True,
                                      "epochs": 3, "note": "x" * 7000})
    runs = {r.info.run_id: r for r in client.search_runs([tracker.experiment_id])}
    assert set(runs) == {study, round_, trial}
    assert "mlflow.parentRunId" not in runs[study].data.tags
    assert runs[round_].data.tags["mlflow.parentRunId"] == study
    assert runs[trial].data.tags["mlflow.parentRunId"] == round_
    assert runs[trial].info.run_name == "trial 1-01"
    assert runs[trial].data.tags["hpo.kind"] == "trial"
    params = runs[trial].data.params
    assert params["lr"] == "0.0123457"  # six significant digits
    assert params["hidden"] == "[64, 32]"  # a tuple reads as the study file's list
    assert params["batchnorm"] == "True" and params["epochs"] == "3"
    assert params["note"] == "x" * 6000  # cut to what MLflow stores
    assert all(r.info.status == "RUNNING" for r in runs.values())


def test_buffered_metrics_reach_the_store_only_when_flushed(tracker, client):
    run = tracker.start_run("trial")
    for epoch in (1, 2, 3):
        tracker.buffer_metrics(run, {"val_accuracy": epoch / 10, "val_loss": 1.0 / epoch,
                                     "diverged": False, "nan": math.nan, "inf": math.inf,
                                     "name": "relu"}, step=epoch)
    assert history(client, run, "val_accuracy") == []  # nothing written yet
    tracker.flush(run, tags={"hpo.status": "ok"})
    assert history(client, run, "val_accuracy") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert history(client, run, "val_loss") == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    data = client.get_run(run).data
    # only finite numbers are metrics: no booleans, NaN, infinities or strings
    assert set(data.metrics) == {"val_accuracy", "val_loss"}
    assert data.tags["hpo.status"] == "ok"
    tracker.flush(run)  # nothing buffered: writes nothing, fails nothing
    assert len(history(client, run, "val_accuracy")) == 3


def test_a_flush_writes_more_than_mlflows_batch_limit(tracker, client):
    run = tracker.start_run("long")
    for step in range(1, 1201):  # 2400 values: three log_batch calls of at most 1000
        tracker.buffer_metrics(run, {"a": float(step), "b": -float(step)}, step=step)
    tracker.flush(run, tags={"done": "yes"})
    assert [s for s, _ in history(client, run, "a")] == list(range(1, 1201))
    assert len(history(client, run, "b")) == 1200
    assert client.get_run(run).data.tags["done"] == "yes"


def test_discard_drops_what_was_not_written(tracker, client):
    """A retried trial starts its epochs over: the first attempt's unwritten epochs go."""
    run = tracker.start_run("retried")
    tracker.buffer_metrics(run, {"val_accuracy": 0.1}, step=1)
    tracker.buffer_metrics(run, {"val_accuracy": 0.2}, step=2)
    tracker.discard(run)
    tracker.buffer_metrics(run, {"val_accuracy": 0.7}, step=1)
    tracker.end_run(run)
    assert history(client, run, "val_accuracy") == [(1, 0.7)]
    tracker.discard(run)  # nothing buffered: no error


def test_end_run_sets_status_and_tags_with_the_last_metrics(tracker, client):
    ok = tracker.start_run("ok")
    tracker.buffer_metrics(ok, {"val_accuracy": 0.5}, step=1)
    tracker.end_run(ok, tags={"hpo.status": "ok", "hpo.epochs": 1})
    failed = tracker.start_run("failed")
    tracker.end_run(failed, "FAILED", tags={"hpo.error": "ValueError: boom"})
    ok_run, failed_run = client.get_run(ok), client.get_run(failed)
    assert ok_run.info.status == "FINISHED" and ok_run.info.end_time is not None
    assert ok_run.data.tags["hpo.epochs"] == "1" and ok_run.data.metrics == {"val_accuracy": 0.5}
    assert failed_run.info.status == "FAILED"
    assert failed_run.data.tags["hpo.error"] == "ValueError: boom"


def test_log_metrics_and_set_tags_write_at_once(tracker, client):
    run = tracker.start_run("round")
    tracker.log_metrics(run, {"best_val_accuracy": 0.8}, step=2)
    tracker.set_tags(run, {"hpo.reasons": "narrowed", "count": 3})
    assert history(client, run, "best_val_accuracy") == [(2, 0.8)]
    assert client.get_run(run).data.tags["count"] == "3"


def test_check_passes_on_a_store_that_answers(store_uri):
    Tracker(store_uri, "checked").check()


def test_an_unreachable_server_is_reported_at_once(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracker = Tracker("http://127.0.0.1:9", "nowhere")  # the discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(TrackingUnreachable) as caught:
        tracker.check()
    assert time.monotonic() - start < 10  # no retries, no long timeout
    assert isinstance(caught.value, RunError) and caught.value.exit_code == 1
    message = str(caught.value)
    assert "'http://127.0.0.1:9'" in message
    assert "--tracking-uri" in message and DEFAULT_URI in message  # how to fix it
    assert "Traceback" not in message and message.count("\n") == 1


def test_the_tracking_uri_comes_from_the_flag_then_the_file_then_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri("sqlite:///cli.db", "sqlite:///file.db") == "sqlite:///cli.db"
    assert resolve_tracking_uri(None, "sqlite:///file.db") == "sqlite:///file.db"
    assert resolve_tracking_uri(None, None) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None, None) == DEFAULT_URI == "sqlite:///mlflow.db"


def test_ui_command_opens_a_server_or_serves_a_local_store_with_hpo_ui():
    assert ui_command("http://host:5000") == "open http://host:5000"
    assert ui_command("https://host") == "open https://host"
    assert ui_command(DEFAULT_URI) == "hpo ui"  # hpo ui's own default: nothing to name
    assert ui_command("sqlite:///x.db") == "hpo ui --tracking-uri sqlite:///x.db"
    assert ui_command("sqlite:////tmp/my runs/m.db") == (
        "hpo ui --tracking-uri 'sqlite:////tmp/my runs/m.db'")  # as a shell reads it


def test_the_runs_link_asks_for_the_model_training_view():
    assert runs_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning")


def test_a_figure_drawn_once_lands_in_every_run_that_shows_it(tracker, client, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 1, 2])
    study = tracker.start_run("study")
    round_run = tracker.start_run("round 1", parent=study)
    tracker.log_figure(round_run, fig, "round_1.png", also=[(study, "plots/round_1.png")])
    plt.close(fig)
    got = [client.download_artifacts(run, path, str(tmp_path / name))
           for run, path, name in ((round_run, "round_1.png", "a"),
                                   (study, "plots/round_1.png", "b"))]
    assert [a.path for a in client.list_artifacts(round_run)] == ["round_1.png"]
    assert [a.path for a in client.list_artifacts(study, "plots")] == ["plots/round_1.png"]
    pngs = [open(path, "rb").read() for path in got]
    assert pngs[0] == pngs[1] and pngs[0].startswith(b"\x89PNG")
