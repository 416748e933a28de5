"""``RoundWriter``: a round's trial events, as the callback hands them on, become MLflow runs
under the round's run and journal lines, in order, once drained. Real sqlite store, real
journal."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from mlflow.tracking import MlflowClient

from hpo.tracking.journal import Journal
from hpo.tracking.store import Tracker
from hpo.tracking.trials import RoundWriter, trial_label
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:  # what Tracker would set, kept to this module
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        yield f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracker(store_uri, request) -> Tracker:
    t = Tracker(store_uri, f"exp-{request.node.name}")
    t.ensure_experiment()
    return t


@pytest.fixture
def journal(tmp_path) -> Journal:
    j = Journal(tmp_path / "journal.jsonl")
    j.reset()
    return j


@pytest.fixture
def round_run(tracker) -> str:
    study = tracker.start_run("study", tags={"hpo.kind": "study"})
    return tracker.start_run("round 1", parent=study, tags={"hpo.kind": "round"})


def new_record(index: int, trial_id: str, lr: float) -> TrialRecord:
    return TrialRecord(round=1, index=index, trial_id=trial_id,
                       params={"lr": lr, "hidden": (32,), "activation": "relu", "init": "he",
                               "batchnorm": True, "epochs": 2},
                       sampled={"lr": lr})


def epoch(n: int, acc: float) -> dict[str, float]:
    return {"epoch": n, "train_accuracy": acc + 0.05, "val_accuracy": acc, "val_loss": 1 - acc}


def lines(journal: Journal) -> list[dict]:
    return [json.loads(line) for line in journal.path.read_text().splitlines()]


def trial_runs(client: MlflowClient, tracker: Tracker, round_run: str) -> dict[str, object]:
    """The round's trial runs by their hpo.trial tag."""
    runs = client.search_runs([tracker.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{round_run}'")
    return {r.data.tags["hpo.trial"]: r for r in runs}


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def run_events(writer: RoundWriter, record: TrialRecord, epochs: list[dict]) -> None:
    """What the callback does for a trial that reports ``epochs``."""
    for metrics in epochs:
        record.history.append(metrics)
        writer.epoch(record, metrics, int(metrics["epoch"]))


def test_a_round_of_trials_lands_in_mlflow_and_the_journal(tracker, journal, round_run):
    client = MlflowClient(tracking_uri=tracker.uri)
    writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run)

    ok = new_record(1, "t1", 0.01)
    writer.started(ok)
    run_events(writer, ok, [epoch(1, 0.5), epoch(2, 0.6)])
    ok.status, ok.flags, ok.node = TrialStatus.OK, ["dead-units"], "node-a"
    writer.ended(ok)

    retried = new_record(2, "t2", 0.02)
    writer.started(retried)
    run_events(writer, retried, [epoch(1, 0.1)])
    writer.drain()  # a retry comes seconds later: the trial's start is written by then
    # the worker died; Tune retries the trial: same record, same run, its epochs start over
    retried.history.clear()
    retried.attempts = 2
    writer.restarted(retried)
    run_events(writer, retried, [epoch(1, 0.4), epoch(2, 0.45)])
    retried.status = TrialStatus.UNDERFITTING
    writer.ended(retried)

    failed = new_record(3, "t3", 0.5)
    writer.started(failed)
    run_events(writer, failed, [epoch(1, 0.2)])
    failed.status, failed.error = TrialStatus.FAILED, "ValueError: boom"
    writer.ended(failed)

    writer.drain()

    # MLflow: one run per trial under the round, named, with params, metrics, status, tags
    runs = trial_runs(client, tracker, round_run)
    assert set(runs) == {"1-01", "1-02", "1-03"}
    r1, r2, r3 = runs["1-01"], runs["1-02"], runs["1-03"]
    assert r1.info.run_id == ok.run_id and r2.info.run_id == retried.run_id
    assert r1.info.run_name == trial_label(ok) == "trial 1-01 lr=1.0e-02 relu/he/bn"
    assert r1.data.params["lr"] == "0.01" and r1.data.params["hidden"] == "[32]"
    assert r1.data.tags["hpo.kind"] == "trial" and r1.data.tags["hpo.round"] == "1"
    assert r1.info.status == "FINISHED"
    assert {k: r1.data.tags[k] for k in ("hpo.status", "hpo.epochs", "hpo.flags", "hpo.node",
                                        "hpo.attempts")} == {
        "hpo.status": "ok", "hpo.epochs": "2", "hpo.flags": "dead-units", "hpo.node": "node-a",
        "hpo.attempts": "1"}
    assert history(client, r1.info.run_id, "val_accuracy") == [(1, 0.5), (2, 0.6)]
    # the retry: only the second attempt's epochs, and how many attempts it took
    assert history(client, r2.info.run_id, "val_accuracy") == [(1, 0.4), (2, 0.45)]
    assert r2.data.tags["hpo.attempts"] == "2" and r2.data.tags["hpo.status"] == "underfitting"
    assert r2.data.tags["hpo.flags"] == "none" and r2.data.tags["hpo.node"] == "unknown"
    # the failure: FAILED in MLflow, the error as a tag, the epoch it finished kept
    assert r3.info.status == "FAILED"
    assert r3.data.tags["hpo.status"] == "failed"
    assert r3.data.tags["hpo.error"] == "ValueError: boom"
    assert "hpo.epochs" not in r3.data.tags
    assert history(client, r3.info.run_id, "val_accuracy") == [(1, 0.2)]

    # the journal: each trial's start (with its run id) before its end, in event order
    events = lines(journal)
    assert [(e["event"], e["record"]["trial_id"]) for e in events] == [
        ("trial_start", "t1"), ("trial_end", "t1"), ("trial_start", "t2"), ("trial_end", "t2"),
        ("trial_start", "t3"), ("trial_end", "t3")]
    assert events[0]["record"]["run_id"] == ok.run_id
    assert events[0]["record"]["status"] == "running" and events[0]["record"]["history"] == []
    state = journal.replay()
    assert state.round_records(1) == [ok, retried, failed]


def test_a_trial_cut_short_goes_on_under_its_new_id_in_the_same_run(tracker, journal,
                                                                      round_run):
    client = MlflowClient(tracking_uri=tracker.uri)
    before = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    cut = new_record(1, "old-id", 0.03)
    before.started(cut)
    run_events(before, cut, [epoch(1, 0.3)])  # buffered, never flushed: the driver died
    before.drain()

    # the resumed round: the callback finds the journal's RUNNING record re-sampled
    record = journal.replay().trials[(1, "old-id")]
    after = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    record.trial_id, record.history = "new-id", []
    after.rekeyed(record, "old-id")
    run_events(after, record, [epoch(1, 0.55), epoch(2, 0.65)])
    record.status = TrialStatus.OK
    after.ended(record)
    after.drain()

    runs = trial_runs(client, tracker, round_run)
    assert list(runs) == ["1-01"]  # the same run, not a second one
    run = runs["1-01"]
    assert run.info.run_id == cut.run_id and run.info.status == "FINISHED"
    assert history(client, run.info.run_id, "val_accuracy") == [(1, 0.55), (2, 0.65)]
    assert [e["event"] for e in lines(journal)] == ["trial_start", "trial_rekey", "trial_end"]
    assert lines(journal)[1] == {"event": "trial_rekey", "round": 1, "old": "old-id",
                                 "new": "new-id"}
    state = journal.replay()
    assert list(state.trials) == [(1, "new-id")]
    assert state.trials[(1, "new-id")].status is TrialStatus.OK


def test_restarted_drops_only_that_trials_unwritten_epochs(tracker, journal, round_run):
    client = MlflowClient(tracking_uri=tracker.uri)
    writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    a, b = new_record(1, "a", 0.01), new_record(2, "b", 0.02)
    writer.started(a)
    writer.started(b)
    run_events(writer, a, [epoch(1, 0.3)])
    run_events(writer, b, [epoch(1, 0.6)])
    writer.drain()  # both starts written
    a.history.clear()
    writer.restarted(a)
    for r in (a, b):
        r.status = TrialStatus.OK
        writer.ended(r)
    writer.drain()
    runs = trial_runs(client, tracker, round_run)
    assert history(client, runs["1-01"].info.run_id, "val_accuracy") == []
    assert runs["1-01"].data.tags["hpo.epochs"] == "0"
    assert history(client, runs["1-02"].info.run_id, "val_accuracy") == [(1, 0.6)]


def test_a_retry_queued_before_the_start_is_written_still_starts_over(tracker, journal,
                                                                      round_run):
    """The store is slow (the writer is behind): start, an epoch and the retry all wait in
    the queue. The retry must still drop the first attempt's epoch."""
    import threading

    client = MlflowClient(tracking_uri=tracker.uri)
    writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    store_busy = threading.Event()
    writer.writer.write(store_busy.wait)  # the writer thread is busy with an earlier write
    retried = new_record(1, "r", 0.01)
    writer.started(retried)
    run_events(writer, retried, [epoch(1, 0.1)])
    retried.history.clear()
    retried.attempts = 2
    writer.restarted(retried)
    run_events(writer, retried, [epoch(1, 0.4)])
    retried.status = TrialStatus.OK
    writer.ended(retried)
    store_busy.set()
    writer.drain()
    run = trial_runs(client, tracker, round_run)["1-01"]
    assert history(client, run.info.run_id, "val_accuracy") == [(1, 0.4)]


def test_a_write_that_fails_is_raised_by_drain(tracker, tmp_path, round_run):
    """The journal's folder is gone: the writer thread's failure reaches the driver."""
    journal = Journal(tmp_path / "gone" / "journal.jsonl")
    writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    writer.started(new_record(1, "t", 0.01))
    with pytest.raises(FileNotFoundError):
        writer.drain()


@pytest.mark.parametrize("sampled, params, label", [
    ({"lr": 0.031}, {"lr": 0.031, "activation": "relu", "init": "he", "batchnorm": True},
     "trial 2-07 lr=3.1e-02 relu/he/bn"),
    ({"lr": 0.1, "weight_decay": 1e-4, "dropout": 0.25},
     {"lr": 0.1, "weight_decay": 1e-4, "dropout": 0.25, "activation": "tanh", "init": "xavier",
      "batchnorm": False},
     "trial 2-07 lr=1.0e-01 wd=1.0e-04 dropout=2.5e-01 tanh/xavier/nobn"),
    # a fixed lr is the same for every trial: not in the label
    ({"activation": "elu"}, {"lr": 0.1, "activation": "elu", "init": "he", "batchnorm": False},
     "trial 2-07 elu/he/nobn"),
])
def test_trial_label_names_what_was_searched(sampled, params, label):
    record = TrialRecord(round=2, index=7, trial_id="x", params=params, sampled=sampled)
    assert trial_label(record) == label
