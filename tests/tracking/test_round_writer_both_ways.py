"""``RoundWriter`` in bulk (a sqlite store's default) against ``RoundWriter`` one by one
(``ONE_BY_ONE_ENV``): the same round of trial events, as the Tune callback hands them on (some
interleaved, a retry, failures), written both ways on a fake clock, must read the same through
``MlflowClient`` and through the MLflow UI's REST API (``hpo ui``): every trial its own run
under the round, with the same params, metrics (every step), tags, status and times.

The helpers (the clock, the two views) are those of ``test_bulk.py``, which holds ``BulkRuns``
against ``Tracker`` row by row.
"""

from __future__ import annotations

import random
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.tracking.test_bulk import (
    KEYS,
    T0,
    Clock,
    client_view,
    clocked,
    start_study,
    ui_view,
)
from tests.ui.conftest import hpo_ui

from hpo.tracking import trials as trials_module
from hpo.tracking.journal import Journal
from hpo.tracking.trials import ONE_BY_ONE_ENV, RoundWriter
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus
from tests.fixtures.tracker_env import tracker_env  # noqa: F401 - autouse

TRIALS, EPOCHS = 9, 4


@contextmanager
def all_clocked(clock: Clock) -> Iterator[None]:
    """test_bulk's clock, and RoundWriter's own reading of it (the bulk path stamps events)."""
    import time

    with clocked(clock), pytest.MonkeyPatch.context() as mp:
        mp.setattr(trials_module, "time",
                   types.SimpleNamespace(time=clock.seconds, monotonic=time.monotonic))
        yield


def round_events() -> list[tuple]:
    """(time in ms, event, trial index, data) of one round, in the callback's order: trials 1
    and 2 run side by side (2 starts after 1, ends before it)."""
    rng = random.Random(7)
    out: list[tuple] = []
    for i in range(TRIALS):
        start = T0 + 10_000 * (1 if i == 2 else i) + (15 if i == 2 else 0)
        epochs = 2 if i % 4 == 3 else EPOCHS  # a failure after 2 epochs
        out.append((start, "started", i, None))
        if i == 5:  # a retry: the first attempt's epoch is dropped
            out.append((start + 20, "epoch", i, (1, {k: rng.random() for k in KEYS})))
            out.append((start + 30, "restarted", i, None))
        for e in range(1, epochs + 1):
            metrics = {k: rng.random() for k in KEYS}
            metrics["val_accuracy"] = 0.5 + 0.1 * e
            # two epochs in one millisecond (short trials do that), else 40 ms apart
            out.append((start + 40 * e - (40 if e == 3 else 0), "epoch", i, (e, metrics)))
        out.append((start + 40 * epochs + (50 if i == 1 else 7), "ended", i, None))
    return sorted(out, key=lambda ev: ev[0])  # stable: events of one ms keep their order


def write_round(uri: str, folder: Path, *, one_by_one: bool) -> None:
    """The round's events through RoundWriter; one by one, each is drained before the clock
    moves (its writes read the clock on the writer thread), in bulk only at the end."""
    clock = Clock()
    with all_clocked(clock), pytest.MonkeyPatch.context() as mp:
        if one_by_one:
            mp.setenv(ONE_BY_ONE_ENV, "1")
        else:
            mp.delenv(ONE_BY_ONE_ENV, raising=False)
        tracker, round_run = start_study(uri, clock)
        journal = Journal(folder / "journal.jsonl")
        journal.reset()
        writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run)
        assert (writer.bulk is None) == one_by_one
        records: dict[int, TrialRecord] = {}
        for ms, kind, i, data in round_events():
            clock.ms = ms
            if kind == "started":
                lr = 10 ** (-3 + i / 4)
                records[i] = TrialRecord(
                    round=1, index=i + 1, trial_id=f"t{i}", sampled={"lr": lr},
                    params={"lr": lr, "hidden": (64,), "activation": "relu", "init": "he",
                            "batchnorm": i % 2 == 0, "epochs": EPOCHS})
                writer.started(records[i])
            elif kind == "epoch":
                record = records[i]
                step, metrics = data
                record.history.append(metrics)
                writer.epoch(record, metrics, step)
            elif kind == "restarted":
                record = records[i]
                record.history.clear()
                record.attempts = 2
                writer.restarted(record)
            else:
                record = records[i]
                if i % 4 == 3:
                    record.status, record.error = TrialStatus.FAILED, f"ValueError: boom {i}"
                else:
                    record.status = TrialStatus.OK if i % 3 else TrialStatus.UNDERFITTING
                    record.flags = ["dead-units"] if i == 4 else []
                record.node = "10.0.0.7"
                writer.ended(record)
            if one_by_one:
                writer.drain()
        writer.drain()
        clock.ms = T0 + 10_000 * TRIALS
        tracker.client.set_terminated(round_run)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, str]:
    """(one-by-one store, bulk store)."""
    folder = tmp_path_factory.mktemp("both")
    uris = []
    for name, one_by_one in (("one", True), ("bulk", False)):
        (folder / name).mkdir()
        uri = f"sqlite:///{folder / name / 'mlflow.db'}"
        write_round(uri, folder / name, one_by_one=one_by_one)
        uris.append(uri)
    return uris[0], uris[1]


def test_mlflow_client_reads_the_same_round_both_ways(stores):
    one, bulk = (client_view(uri) for uri in stores)
    assert len(one) == TRIALS + 1 and sorted(one) == sorted(bulk)
    for name in one:
        assert bulk[name] == one[name], name
    trials = [run for name, run in one.items() if name != "round 1"]
    assert sorted(r["status"] for r in trials).count("FAILED") == 2
    retried = next(r for r in trials if r["tags"]["hpo.attempts"] == "2")
    assert [s for s, _, _ in retried["history"]["val_accuracy"]] == list(range(1, EPOCHS + 1))
    for run in trials:
        assert run["tags"]["mlflow.parentRunId"] == "round 1"
        assert run["start_time"] < run["end_time"]
        assert all(run["start_time"] <= t <= run["end_time"]
                   for points in run["history"].values() for _, t, _ in points)


@pytest.mark.slow
def test_the_ui_rest_api_serves_the_same_round_both_ways(stores, tmp_path):
    one_uri, bulk_uri = stores
    with hpo_ui(one_uri, cwd=tmp_path) as one_base, hpo_ui(bulk_uri, cwd=tmp_path) as bulk_base:
        one, bulk = ui_view(one_base), ui_view(bulk_base)
    assert len(one) == TRIALS + 1
    assert all(len(run["history"]) == len(KEYS) for name, run in one.items()
               if name != "round 1")
    assert bulk == one
