"""The writer thread keeps MLflow and the journal off Tune's loop, but in event order."""

from __future__ import annotations

import json

import pytest

from hpo.tracking.journal import Journal
from hpo.tracking.writer import Writer


def test_a_writer_that_falls_behind_holds_the_events_back(tmp_path, monkeypatch):
    """Trials that end faster than the store takes them wait for it, instead of piling up."""
    import threading

    import hpo.tracking.writer

    monkeypatch.setattr(hpo.tracking.writer, "WRITE_BACKLOG", 2)
    journal = Journal(tmp_path / "journal.jsonl")
    journal.reset()
    writer = Writer()
    store_slow = threading.Event()
    writer.write(store_slow.wait)  # the writer is busy with this one
    for i in range(2):  # room for two behind it
        writer.write(journal.append, "trial_rekey", round=1, old=str(i), new="x")
    third = threading.Thread(target=writer.write, args=(journal.append, "trial_rekey"),
                             kwargs={"round": 1, "old": "2", "new": "x"})
    third.start()
    third.join(timeout=1.0)
    assert third.is_alive()  # the event waits for the writer
    store_slow.set()
    third.join(timeout=30)
    assert not third.is_alive()
    writer.drain()
    assert [json.loads(line)["old"] for line in journal.path.read_text().splitlines()] == [
        "0", "1", "2"]


def test_writes_land_in_order_once_drained(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.reset()
    writer = Writer()
    for i in range(50):
        writer.write(journal.append, "trial_rekey", round=1, old=str(i), new=str(i + 1))
    writer.drain()
    lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert [line["old"] for line in lines] == [str(i) for i in range(50)]


def test_a_failed_write_is_raised_and_stops_the_writes_after_it(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.reset()
    writer = Writer()
    missing = Journal(tmp_path / "no-such-folder" / "journal.jsonl")
    writer.write(journal.append, "trial_rekey", round=1, old="a", new="b")
    writer.write(missing.append, "trial_rekey", round=1, old="b", new="c")
    writer.write(journal.append, "trial_rekey", round=1, old="c", new="d")
    with pytest.raises(FileNotFoundError):
        writer.drain()
    # the write before the failure landed; the one after it did not
    assert [json.loads(line)["old"] for line in journal.path.read_text().splitlines()] == ["a"]
    with pytest.raises(FileNotFoundError):  # and the next event says so at once
        writer.write(journal.append, "trial_rekey", round=1, old="d", new="e")
