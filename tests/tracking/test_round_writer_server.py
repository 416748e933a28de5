"""``RoundWriter`` one by one on a real ``mlflow server``: ``SERVER_WRITERS`` writer threads
against one. The same round of trial events, as the Tune callback hands them on (trials side by
side, two epochs in one millisecond, a retry, failures, a stop and the resumed round's new
trial ids), written both ways into two experiments of one server, must read the same through
``MlflowClient``: every trial its own run, with the same params, metrics (every step, value and
time), tags, status and times; and each trial's journal lines must be the same, in order.

The clock is test_bulk's fake one: it moves between phases of the round, each phase's events
handed on at once and drained before the next, so that the writer threads write a phase's
trials concurrently and still read the same "now" as one writer does.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.mlflow_server import MlflowServer
from tests.tracking.test_bulk import KEYS, T0, Clock, client_view, start_study
from tests.tracking.test_round_writer_both_ways import all_clocked

from hpo.tracking.journal import Journal
from hpo.tracking.trials import SERVER_WRITERS, RoundWriter
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus
from tests.fixtures.tracker_env import tracker_env  # noqa: F401 - autouse

pytestmark = pytest.mark.slow

TRIALS, NEW_TRIALS, EPOCHS = 16, 4, 3
CUT = (14, 15)  # still running when the round stops; the resumed round runs them again
RETRIED = 5  # its first attempt fails after one epoch
PHASE_MS = 1000


def round_events() -> tuple[list[tuple], list[tuple]]:
    """(phase, event, trial index, data) of the round until it stops, and of the resumed round.
    Four trials start a phase; a trial reports an epoch a phase (every third two in one), from
    the phase it starts (even ones) or the next; it ends in the phase of its last epoch or the
    next; some fail after an epoch; ``RETRIED`` runs again after its first epoch. The resumed
    round runs the ``CUT`` trials again under new ids, beside ``NEW_TRIALS`` new ones."""
    rng = random.Random(20)

    def metrics() -> dict[str, float]:
        return {k: rng.random() for k in KEYS}

    def trial(i: int, start: int, kind: str = "started") -> list[tuple]:
        out = [(start, kind, i, None)]
        phase = start + i % 2
        if i == RETRIED:
            out += [(phase, "epoch", i, (1, metrics())), (phase + 1, "restarted", i, None)]
            phase += 1
        for e in range(1, (1 if i % 5 == 4 else EPOCHS) + 1):
            out.append((phase, "epoch", i, (e, metrics())))
            last, phase = phase, phase + (0 if i % 3 == 0 and e == 1 else 1)
        return out + [(last + (i % 4 >= 2), "ended", i, None)]

    before: list[tuple] = []
    for i in range(TRIALS):
        before += ([(i // 4, "started", i, None), (i // 4, "epoch", i, (1, metrics()))]
                   if i in CUT else trial(i, i // 4))
    stop = max(phase for phase, *_ in before) + 1
    after = [event for i in CUT for event in trial(i, stop + 1, "rekeyed")]
    after += [event for i in range(TRIALS, TRIALS + NEW_TRIALS) for event in trial(i, stop + 1)]
    return _interleaved(before), _interleaved(after)


def _interleaved(events: list[tuple]) -> list[tuple]:
    """By phase; within one, the trials' first events, then their second ones, ...: each
    trial's own in order, different trials' interleaved."""
    rank: dict[tuple[int, int], int] = {}
    keyed = []
    for event in events:
        phase, _, i, _ = event
        n = rank[(phase, i)] = rank.get((phase, i), -1) + 1
        keyed.append(((phase, n), event))
    return [event for _, event in sorted(keyed, key=lambda pair: pair[0])]


def new_record(i: int) -> TrialRecord:
    lr = 10 ** (-3 + i / 8)
    return TrialRecord(round=1, index=i + 1, trial_id=f"t{i}", sampled={"lr": lr},
                       params={"lr": lr, "hidden": (64,), "activation": "relu", "init": "he",
                               "batchnorm": i % 2 == 0, "epochs": EPOCHS})


def hand_on(writer: RoundWriter, records: dict[int, TrialRecord], clock: Clock,
            events: list[tuple]) -> None:
    """The events as the callback hands them to ``writer``, a phase at a time."""
    phases = sorted({phase for phase, *_ in events})
    for phase in phases:
        clock.ms = T0 + PHASE_MS * phase
        for _, kind, i, data in (e for e in events if e[0] == phase):
            if kind == "started":
                records[i] = new_record(i)
                writer.started(records[i])
            elif kind == "rekeyed":
                old = records[i].trial_id
                records[i].trial_id, records[i].history = f"{old}-again", []
                writer.rekeyed(records[i], old)
            elif kind == "restarted":
                records[i].history.clear()
                records[i].attempts = 2
                writer.restarted(records[i])
            elif kind == "epoch":
                step, metrics = data
                records[i].history.append(metrics)
                writer.epoch(records[i], metrics, step)
            else:
                record = records[i]
                if i % 5 == 4:
                    record.status, record.error = TrialStatus.FAILED, f"ValueError: boom {i}"
                else:
                    record.status = TrialStatus.OK if i % 3 else TrialStatus.UNDERFITTING
                record.node = "10.0.0.7"
                writer.ended(record)
        writer.drain()  # the writer threads caught up: the clock may move


def write_round(uri: str, folder: Path, experiment: str, writers: int) -> list[int]:
    """The round, stopped (its running trials KILLED) and resumed, through RoundWriters with
    ``writers`` threads; the number of threads the trials were written on, each part."""
    folder.mkdir()
    clock = Clock()
    before, after = round_events()
    with all_clocked(clock):
        tracker, round_run = start_study(uri, clock, experiment)
        journal = Journal(folder / "journal.jsonl")
        journal.reset()
        records: dict[int, TrialRecord] = {}
        used = []
        for part in (before, after):
            writer = RoundWriter(tracker, journal, round_index=1, round_run=round_run,
                                 server_writers=writers)
            assert writer.bulk is None
            hand_on(writer, records, clock, part)
            used.append(len({id(writer.writer.on(records[i].trial_id))
                             for _, _, i, _ in part}))
            if part is before:  # a Ctrl-C: the trials still running end KILLED
                clock.ms += PHASE_MS
                writer.abandon(list(records.values()), "KILLED")
        clock.ms += PHASE_MS
        tracker.client.set_terminated(round_run)
    return used


def trial_lines(journal: Path) -> dict[int, list[dict]]:
    """Each trial's journal lines (by its index), in the journal's order, without run ids
    (each store's own)."""
    index_of: dict[str, int] = {}
    out: dict[int, list[dict]] = {}
    for line in (json.loads(text) for text in journal.read_text().splitlines()):
        if line["event"] == "trial_rekey":
            index = index_of[line["new"]] = index_of[line["old"]]
        else:
            record = {k: v for k, v in line["record"].items() if k != "run_id"}
            index = index_of[record["trial_id"]] = record["index"]
            line = {**line, "record": record}
        out.setdefault(index, []).append(line)
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Iterator[tuple[str, Path, dict[int, list[int]]]]:
    """One server; the round written with SERVER_WRITERS threads, and with one, into two
    experiments: (its URL, the folder, {threads: the threads used, each part})."""
    folder = tmp_path_factory.mktemp("writers")
    server = MlflowServer(folder / "server").start()
    try:
        used = {n: write_round(server.url, folder / f"writers-{n}", f"writers-{n}", n)
                for n in (SERVER_WRITERS, 1)}
        yield server.url, folder, used
    finally:
        server.stop()


def test_concurrent_writers_write_the_same_runs_as_one(written):
    url, _, used = written
    assert SERVER_WRITERS > 1 and used == {SERVER_WRITERS: [SERVER_WRITERS] * 2, 1: [1, 1]}
    many, one = client_view(url, f"writers-{SERVER_WRITERS}"), client_view(url, "writers-1")
    assert len(one) == TRIALS + NEW_TRIALS + 1 and sorted(many) == sorted(one)
    for name in one:
        assert many[name] == one[name], name
    trials = [run for name, run in one.items() if name != "round 1"]
    assert sorted(r["status"] for r in trials).count("FAILED") == 4
    assert all(r["status"] in ("FINISHED", "FAILED") for r in trials)
    retried = [r for r in trials if r["tags"]["hpo.attempts"] == "2"]
    assert len(retried) == 1
    assert [s for s, _, _ in retried[0]["history"]["val_accuracy"]] == [1, 2, 3]
    for run in trials:
        assert all(len(points) == int(run["tags"].get("hpo.epochs", 1))
                   for points in run["history"].values())
        assert all(run["start_time"] <= t <= run["end_time"]
                   for points in run["history"].values() for _, t, _ in points)


def test_each_trials_journal_lines_are_the_same_and_in_order(written):
    _, folder, _ = written
    many = trial_lines(folder / f"writers-{SERVER_WRITERS}" / "journal.jsonl")
    one = trial_lines(folder / "writers-1" / "journal.jsonl")
    assert sorted(many) == sorted(one) == list(range(1, TRIALS + NEW_TRIALS + 1))
    for index, lines in one.items():
        assert many[index] == lines, index
        cut = index - 1 in CUT
        assert [line["event"] for line in lines] == (
            ["trial_start", "trial_rekey", "trial_end"] if cut else ["trial_start", "trial_end"])
    state = Journal(folder / f"writers-{SERVER_WRITERS}" / "journal.jsonl").replay()
    assert len(state.trials) == TRIALS + NEW_TRIALS
    assert TrialStatus.RUNNING not in {r.status for r in state.trials.values()}
