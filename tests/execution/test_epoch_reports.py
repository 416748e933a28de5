"""How results travel from a trial to the driver, and from the driver to MLflow and the journal.

``EpochReports`` decides how many round trips through Tune's driver a trial costs; the study
callback's writer thread keeps MLflow and the journal off Tune's loop but in event order.
"""

from __future__ import annotations

import json

import pytest

from hpo.callback import StudyCallback
from hpo.journal import Journal
from hpo.spec import parse_spec
from hpo.tracking import Tracker
from hpo.tune import EpochReports


def _epoch(n: int) -> dict[str, float]:
    return {"epoch": n, "val_accuracy": n / 10, "val_loss": 1.0 / n}


def test_every_epoch_reports_each_epoch_as_it_ends():
    sent: list[dict] = []
    reports = EpochReports(sent.append, every_epoch=True, top=("val_accuracy", "epoch"),
                           extra={"node": "n1"})
    for n in (1, 2, 3):
        reports(_epoch(n))
        assert len(sent) == n  # before the next epoch starts: a scheduler can stop it here
    reports.flush()
    assert len(sent) == 3
    assert [r["epochs"] for r in sent] == [[_epoch(1)], [_epoch(2)], [_epoch(3)]]
    assert sent[-1]["val_accuracy"] == 0.3 and sent[-1]["node"] == "n1"


def test_without_a_scheduler_epochs_travel_together():
    sent: list[dict] = []
    reports = EpochReports(sent.append, every_epoch=False, top=("val_accuracy", "epoch"),
                           extra={"node": "n1"}, interval=3600)
    for n in range(1, 11):
        reports(_epoch(n))
    assert sent == []  # ten short epochs: no round trip yet
    reports.flush()
    assert len(sent) == 1
    (report,) = sent
    assert report["epochs"] == [_epoch(n) for n in range(1, 11)]
    # what Tune's searcher and the trial's last result read: the last epoch's top keys, alone
    assert {k: v for k, v in report.items() if k != "epochs"} == {
        "epoch": 10, "val_accuracy": 1.0, "node": "n1"}
    reports.flush()
    assert len(sent) == 1  # nothing new, nothing sent


def test_slow_epochs_are_reported_as_they_end():
    sent: list[dict] = []
    reports = EpochReports(sent.append, every_epoch=False, top=("val_accuracy",), interval=0.0)
    reports(_epoch(1))
    reports(_epoch(2))
    assert [r["epochs"] for r in sent] == [[_epoch(1)], [_epoch(2)]]


def _callback(tmp_path, journal: Journal) -> StudyCallback:
    spec = parse_spec({"name": "writer"})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "writer")
    return StudyCallback(spec=spec, ranges={}, round_index=1, round_run="", tracker=tracker,
                         journal=journal, total=1, quiet=True)


def test_a_writer_that_falls_behind_holds_the_events_back(tmp_path, monkeypatch):
    """Trials that end faster than the store takes them wait for it, instead of piling up."""
    import threading

    import hpo.callback

    monkeypatch.setattr(hpo.callback, "WRITE_BACKLOG", 2)
    journal = Journal(tmp_path / "journal.jsonl")
    journal.reset()
    callback = _callback(tmp_path, journal)
    store_slow = threading.Event()
    callback._write(store_slow.wait)  # the writer is busy with this one
    for i in range(2):  # room for two behind it
        callback._write(journal.append, "trial_rekey", round=1, old=str(i), new="x")
    third = threading.Thread(target=callback._write, args=(journal.append, "trial_rekey"),
                             kwargs={"round": 1, "old": "2", "new": "x"})
    third.start()
    third.join(timeout=1.0)
    assert third.is_alive()  # the event waits for the writer
    store_slow.set()
    third.join(timeout=30)
    assert not third.is_alive()
    callback.drain()
    assert [json.loads(line)["old"] for line in journal.path.read_text().splitlines()] == [
        "0", "1", "2"]


def test_writes_land_in_order_once_drained(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.reset()
    callback = _callback(tmp_path, journal)
    for i in range(50):
        callback._write(journal.append, "trial_rekey", round=1, old=str(i), new=str(i + 1))
    callback.drain()
    lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert [line["old"] for line in lines] == [str(i) for i in range(50)]


def test_a_failed_write_is_raised_and_stops_the_writes_after_it(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.reset()
    callback = _callback(tmp_path, journal)
    missing = Journal(tmp_path / "no-such-folder" / "journal.jsonl")
    callback._write(journal.append, "trial_rekey", round=1, old="a", new="b")
    callback._write(missing.append, "trial_rekey", round=1, old="b", new="c")
    callback._write(journal.append, "trial_rekey", round=1, old="c", new="d")
    with pytest.raises(FileNotFoundError):
        callback.drain()
    # the write before the failure landed; the one after it did not
    assert [json.loads(line)["old"] for line in journal.path.read_text().splitlines()] == ["a"]
    with pytest.raises(FileNotFoundError):  # and the next event says so at once
        callback._write(journal.append, "trial_rekey", round=1, old="d", new="e")


def _finish(callback: StudyCallback, i: int, accuracy: float) -> None:
    from hpo.journal import TrialRecord

    callback.records[str(i)] = TrialRecord(
        round=1, index=i, trial_id=str(i), params={}, sampled={}, status="ok",
        history=[{"val_accuracy": accuracy}])
    callback._progress([])


def test_progress_prints_each_quarter_of_the_round_with_its_best(tmp_path, capsys):
    callback = _callback(tmp_path, Journal(tmp_path / "journal.jsonl"))
    callback.total, callback.quiet, callback._tty = 8, False, False
    for i, accuracy in enumerate([0.5, 0.7, 0.6, 0.9, 0.8, 0.1, 0.2, 0.3], start=1):
        _finish(callback, i, accuracy)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ")[1] for line in lines] == [
        "2/8 trials, best val_accuracy 0.7000", "4/8 trials, best val_accuracy 0.9000",
        "6/8 trials, best val_accuracy 0.9000", "8/8 trials, best val_accuracy 0.9000"]


def test_progress_on_a_terminal_is_redrawn_at_most_so_often_and_ends_the_round(
        tmp_path, capsys, monkeypatch):
    import hpo.callback

    monkeypatch.setattr(hpo.callback, "PROGRESS_INTERVAL_S", 3600.0)
    callback = _callback(tmp_path, Journal(tmp_path / "journal.jsonl"))
    callback.total, callback.quiet, callback._tty = 1000, False, True
    for i in range(1, 1001):
        _finish(callback, i, i / 1000)
    drawn = capsys.readouterr().err.split("\r")[1:]
    # the first trial's line, then nothing for the interval, then the round's last, which ends
    assert [d.split("] ")[1] for d in drawn] == [
        "1/1000 trials, best val_accuracy 0.0010",
        "1000/1000 trials, best val_accuracy 1.0000\n"]
