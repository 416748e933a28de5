"""A round that stops (a signal, a failed write): which trial runs end how, and the order that
makes a kill at any instant safe for ``--resume``. Real sqlite store, real journal."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from hpo.study.resume import drop_unjournaled_runs
from hpo.tracking.journal import Journal
from hpo.tracking.store import Tracker
from hpo.tracking.trials import ONE_BY_ONE_ENV, RoundWriter
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "stops")
    tracker.ensure_experiment()
    journal = Journal(tmp_path / "journal.jsonl")
    journal.reset()
    study = tracker.start_run("study", tags={"hpo.kind": "study"})
    journal.append("study", fingerprint="f", study_run_id=study)
    round_run = tracker.start_run("round 1", parent=study, tags={"hpo.kind": "round"})
    journal.append("round_start", round=1, run_id=round_run, ranges={})
    return tracker, journal, round_run


def record(index: int) -> TrialRecord:
    return TrialRecord(round=1, index=index, trial_id=f"t{index}", params={"lr": 0.1 * index},
                       sampled={"lr": 0.1 * index})


def run_epochs(sink: RoundWriter, r: TrialRecord, n: int) -> None:
    for step in range(1, n + 1):
        metrics = {"val_accuracy": 0.1 * step, "val_loss": 1.0 / step}
        r.history.append(metrics)
        sink.epoch(r, metrics, step)


def test_a_stop_ends_running_trials_killed_without_their_epochs(setup):
    tracker, journal, round_run = setup
    before = record(1)  # ended before a resume: its run is ended, and stays as it is
    sink = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    sink.started(before)
    run_epochs(sink, before, 2)
    before.status = TrialStatus.OK
    sink.ended(before)
    sink.drain()

    sink = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    done, cut = record(2), record(3)
    for r in (done, cut):
        sink.started(r)
        run_epochs(sink, r, 2)
    done.status = TrialStatus.OK
    sink.ended(done)
    sink.abandon([before, done, cut], "KILLED")

    client = tracker.client
    assert client.get_run(before.run_id).info.status == "FINISHED"
    assert client.get_run(done.run_id).info.status == "FINISHED"
    assert client.get_run(cut.run_id).info.status == "KILLED"
    assert client.get_metric_history(cut.run_id, "val_accuracy") == []  # run again on resume
    state = journal.replay()
    assert state.trials[(1, "t3")].status is TrialStatus.RUNNING
    assert state.steps[(1, "t2")] == [1, 2]


def test_an_ended_trial_is_journaled_before_its_run_ends_and_resume_completes_it(
        setup, monkeypatch):
    """One by one (the bulk writer's kill mid-flush: tests/tracking/test_round_writer.py)."""
    monkeypatch.setenv(ONE_BY_ONE_ENV, "1")
    tracker, journal, round_run = setup
    sink = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
    r = record(1)
    sink.started(r)
    run_epochs(sink, r, 3)
    r.status = TrialStatus.OK
    sink.drain()
    seen: list[str] = []
    journal_append, terminate = journal.append, tracker.client.set_terminated

    def fail_to_end(run_id, status=None):  # the driver dies here
        seen.append("set_terminated")
        raise RuntimeError("killed")

    journal.append = lambda event, **data: (seen.append(event), journal_append(event, **data))
    tracker.client.set_terminated = fail_to_end
    sink.ended(r)
    with pytest.raises(RuntimeError):
        sink.drain()
    assert seen == ["trial_end", "set_terminated"]
    tracker.client.set_terminated = terminate

    # What --resume finds: the journal says ended, MLflow holds the epochs, the run RUNNING.
    past = Journal(journal.path).replay()
    client = MlflowClient(tracker.uri)
    assert client.get_run(r.run_id).info.status == "RUNNING"
    drop_unjournaled_runs(tracker, past)
    assert client.get_run(r.run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(r.run_id, "val_accuracy")]
    assert steps == [1, 2, 3]  # each epoch once
    assert client.get_run(r.run_id).data.tags["hpo.status"] == str(TrialStatus.OK)
    assert json.loads(journal.path.read_text().splitlines()[-1])["steps"] == [1, 2, 3]
