"""``RoundWriter``: a round's trial events, as the callback hands them on, become MLflow runs
under the round's run and journal lines, in order, once drained. Real sqlite store, real
journal; each test both ways: in bulk (a sqlite store's default) and one by one."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from mlflow.tracking import MlflowClient

from hpo.tracking.journal import Journal
from hpo.tracking.store import Tracker
from hpo.tracking.trials import ONE_BY_ONE_ENV, RoundWriter, trial_label
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:  # what Tracker would set, kept to this module
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        yield f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(params=["bulk", "one-by-one"])
def tracker(store_uri, request, monkeypatch) -> Tracker:
    if request.param == "one-by-one":
        monkeypatch.setenv(ONE_BY_ONE_ENV, "1")
    else:
        monkeypatch.delenv(ONE_BY_ONE_ENV, raising=False)
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


def resume_trial(tracker: Tracker, journal: Journal, round_run: str, old: str, new: str,
                 epochs: list[dict]) -> None:
    """The resumed round: a new RoundWriter, the callback finds the journal's RUNNING record
    ``old`` re-sampled under the id ``new``; it reports ``epochs`` and ends OK."""
    record = journal.replay().trials[(1, old)]
    after = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    record.trial_id, record.history = new, []
    after.rekeyed(record, old)
    run_events(after, record, epochs)
    record.status = TrialStatus.OK
    after.ended(record)
    after.drain()


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

    resume_trial(tracker, journal, round_run, "old-id", "new-id",
                 [epoch(1, 0.55), epoch(2, 0.65)])

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


def test_a_stopped_round_ends_its_running_trials_killed_and_resume_reopens_them(
        tracker, journal, round_run):
    """Ctrl-C mid-round: the trial still running gets a KILLED run with its params and no
    epochs, the ended one is FINISHED; the resumed round runs it again into that run."""
    client = MlflowClient(tracking_uri=tracker.uri)
    writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    done, cut = new_record(1, "done", 0.01), new_record(2, "cut", 0.02)
    writer.started(done)
    writer.started(cut)
    run_events(writer, done, [epoch(1, 0.5), epoch(2, 0.6)])
    run_events(writer, cut, [epoch(1, 0.3)])
    done.status = TrialStatus.OK
    writer.ended(done)
    writer.abandon([done, cut], "KILLED")

    runs = trial_runs(client, tracker, round_run)
    assert {k: r.info.status for k, r in runs.items()} == {"1-01": "FINISHED", "1-02": "KILLED"}
    killed = runs["1-02"]
    assert killed.info.run_id == cut.run_id and killed.data.params["lr"] == "0.02"
    assert killed.data.tags["hpo.status"] == "running" and not killed.data.metrics
    assert killed.info.end_time >= killed.info.start_time

    resume_trial(tracker, journal, round_run, "cut", "cut-again",
                 [epoch(1, 0.35), epoch(2, 0.45)])
    runs = trial_runs(client, tracker, round_run)
    assert {k: r.info.status for k, r in runs.items()} == {"1-01": "FINISHED",
                                                           "1-02": "FINISHED"}
    assert runs["1-02"].info.run_id == cut.run_id
    assert history(client, cut.run_id, "val_accuracy") == [(1, 0.35), (2, 0.45)]
    assert runs["1-02"].data.tags["hpo.status"] == "ok"


def test_ended_trials_reach_mlflow_within_a_batch_time_without_a_drain(tracker, journal,
                                                                       round_run):
    """In bulk the runs go out in batches: at most BATCH_S after a trial ends (give or take
    the writer's tick), and at once when BATCH_TRIALS have ended."""
    import time

    from hpo.tracking.trials import BATCH_S, BATCH_TRIALS

    client = MlflowClient(tracking_uri=tracker.uri)
    writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    if writer.bulk is None:
        pytest.skip("one by one, a trial's run is there from its start: no batch to wait for")
    records = [new_record(i + 1, f"t{i}", 0.01) for i in range(BATCH_TRIALS + 1)]
    for r in records:
        writer.started(r)
        run_events(writer, r, [epoch(1, 0.5)])
        r.status = TrialStatus.OK
        writer.ended(r)
    deadline = time.monotonic() + BATCH_S + 5  # a busy machine's margin
    while len(trial_runs(client, tracker, round_run)) < len(records):
        assert time.monotonic() < deadline, "the runs lag their trials"
        time.sleep(0.1)
    assert all(e["event"] for e in lines(journal))  # the journal holds them too
    assert len([e for e in lines(journal) if e["event"] == "trial_end"]) == len(records)
    writer.drain()


def test_a_batch_lost_after_its_journal_lines_is_written_from_the_journal_on_resume(
        tracker, journal, round_run):
    """In bulk, a kill between a batch's journal lines and its commit (what the e2e resume
    test does with a real SIGKILL): the journal holds the trials ended, MLflow lacks their
    runs; ``drop_unjournaled_runs`` writes them as the writer would have, once."""
    from hpo.study.resume import drop_unjournaled_runs

    writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    if writer.bulk is None:
        pytest.skip("one by one: test_round_stop.py's ended-trial test")
    study = tracker.client.get_run(round_run).data.tags["mlflow.parentRunId"]
    journal.append("study", fingerprint="f", study_run_id=study)
    journal.append("round_start", round=1, run_id=round_run, ranges={})
    kept, lost = new_record(1, "kept", 0.01), new_record(2, "lost", 0.02)
    for r in (kept, lost):
        writer.started(r)
        run_events(writer, r, [epoch(1, 0.5), epoch(2, 0.6)])
        r.status = TrialStatus.OK
    writer.ended(kept)
    writer.drain()
    writer.ended(lost)

    def killed(*args, **kwargs):
        raise RuntimeError("killed mid-flush")

    writer.bulk.write = killed
    with pytest.raises(RuntimeError, match="mid-flush"):
        writer.drain()
    client = MlflowClient(tracking_uri=tracker.uri)
    assert set(trial_runs(client, tracker, round_run)) == {"1-01"}
    (end,) = [e for e in lines(journal) if e["event"] == "trial_end"
              and e["record"]["trial_id"] == "lost"]
    start_ms, end_ms, stamps = end["times"]

    drop_unjournaled_runs(tracker, journal.replay())
    drop_unjournaled_runs(tracker, journal.replay())  # a second resume writes nothing twice
    runs = trial_runs(client, tracker, round_run)
    assert set(runs) == {"1-01", "1-02"}
    run = runs["1-02"]
    assert run.info.run_id == lost.run_id and run.info.status == "FINISHED"
    assert (run.info.start_time, run.info.end_time) == (start_ms, end_ms)
    assert run.info.run_name == trial_label(lost) and run.data.params["lr"] == "0.02"
    assert run.data.tags["hpo.status"] == "ok" and run.data.tags["hpo.epochs"] == "2"
    assert [(m.step, m.value, m.timestamp) for m in client.get_metric_history(
        lost.run_id, "val_accuracy")] == [(1, 0.5, stamps[0]), (2, 0.6, stamps[1])]


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
