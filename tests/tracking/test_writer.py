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


def test_writers_write_different_keys_at_once_and_each_keys_in_order():
    """Two keys on two threads: each one's first write waits for the other's to begin (one
    thread would deadlock it, and the barrier's timeout say so); each key's writes in order."""
    import threading

    from hpo.tracking.writer import Writers

    writers = Writers(2)
    both = threading.Barrier(2, timeout=30)
    done: dict[str, list[int]] = {"a": [], "b": []}
    for key in ("a", "b"):
        writers.on(key).write(both.wait)
        for i in range(20):
            writers.on(key).write(done[key].append, i)
    writers.drain()
    assert writers.on("a") is not writers.on("b")
    assert done == {"a": list(range(20)), "b": list(range(20))}


def test_a_moved_key_keeps_its_thread_and_its_order():
    import threading

    from hpo.tracking.writer import Writers

    writers = Writers(3)
    for key in ("x", "old", "y"):
        writers.on(key)
    thread, busy, done = writers.on("old"), threading.Event(), []
    writers.on("old").write(busy.wait)
    writers.on("old").write(done.append, "old")
    writers.moved("old", "new")
    writers.on("new").write(done.append, "new")
    busy.set()
    writers.drain()
    assert writers.on("new") is thread and done == ["old", "new"]
    writers.moved("unknown", "fresh")  # a key first seen as moved (a resumed round's) gets one
    writers.on("fresh").write(done.append, "fresh")
    writers.drain()
    assert done == ["old", "new", "fresh"]


def test_the_first_failure_of_any_writer_thread_stops_all_and_drain_waits_for_all():
    """Thread a fails while thread b is busy: b finishes that write, drops the ones queued
    after the failure (as one writer does), and drain raises a's error once both are done."""
    import threading
    import time

    from hpo.tracking.writer import Writers

    writers = Writers(2)
    b_busy, done = threading.Event(), []

    def fail() -> None:
        raise OSError("disk full")

    def slow() -> None:
        b_busy.set()
        deadline = time.monotonic() + 30
        while writers.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        done.append("b's write under way")

    writers.on("b").write(slow)
    b_busy.wait(30)
    writers.on("b").write(done.append, "after the failure")
    writers.on("a").write(fail)
    with pytest.raises(OSError, match="disk full"):
        writers.drain()
    assert done == ["b's write under way"]
    assert isinstance(writers.error, OSError)
    with pytest.raises(OSError, match="disk full"):  # the next event of any trial says so
        writers.on("b").write(done.append, "later")
