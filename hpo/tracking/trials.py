"""A round's trials in MLflow and the journal: the Tune callback's events, written in order.

Trials never talk to MLflow: the round's callback hands each event here, and a writer thread
writes it, so Tune's loop (which hands the next trial to a free actor) never waits on a
database.

Two ways, one result (the same runs, params, metrics, tags, status and times):

- **In bulk** (``_BulkTrials``; a local sqlite store): a trial's run is written once it has
  ended, with many others in one transaction (``BulkRuns``): up to ``BATCH_TRIALS`` trials, or
  what ended in ``BATCH_S`` seconds, whichever comes first, and whatever waits when the round
  drains. Its run id is chosen when it starts (``new_run_id``) and journaled with its start.
  Journal lines go out whenever the writer has caught up with the events (one write and fsync
  for all that came meanwhile: a pack's 64 ends are one), and always before the runs of the
  trials they end. A trial's run appears in MLflow when it ends, not when it starts. The
  callback's events cost the driver's thread a queue put, no store call; its epochs wait in
  memory until the trial ends.
- **One by one** (``_OneByOneTrials``; any other store, or ``ONE_BY_ONE_ENV`` set):
  ``Tracker``'s calls, a run created when its trial starts (``record.run_id`` is then set by
  the writer thread, so every write that needs it is queued behind the trial's start), its
  metrics and end when it ends. On a tracking server (an http(s) URI) ``SERVER_WRITERS``
  threads write different trials at once (``Writers``): a trial gets one when it starts, in
  turn, and all its writes (a retry, a new trial id, epochs, its end) go to that one, in
  order. What they share is safe so: the journal appends under its lock (a trial's end line
  still goes before its run is ended: both on its thread), the count of ends and the runs
  ended under ``_OneByOneTrials``' lock, ``Tracker``'s metric buffers per run (each one
  thread's), and the ``MlflowClient``, whose one ``requests`` session gives each thread a
  connection of its pool (``MLFLOW_HTTP_POOL_MAXSIZE``, 10). Any other store keeps one thread.

``RoundWriter`` chooses the way once, when the round starts, and hands it every event.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from hpo.tracking.journal import Journal
from hpo.tracking.store import Tracker
from hpo.tracking.writer import Writer, Writers
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus

__all__ = ["BATCH_S", "BATCH_TRIALS", "ONE_BY_ONE_ENV", "SERVER_WRITERS", "RoundWriter",
           "end_tags", "start_tags", "trial_label"]

#: A test's way to kill the driver (a real SIGKILL) at the instant a crash hurts most.
#: One by one: after the metrics of round K's N-th trial to end reached MLflow (N counts the
#: ends of all writer threads), before its run is marked ended ("trial-metrics:K:N"). In bulk:
#: inside the transaction that writes round K's N-th trial to end, every row in, none
#: committed, the batch's journal lines on disk ("trial-batch:K:N").
CRASH_ENV = "HPO_TEST_SIGKILL_AT"
#: Set (to anything but "" or "0"): write trials one by one even on a sqlite store.
ONE_BY_ONE_ENV = "HPO_TRACKING_ONE_BY_ONE"
#: A bulk batch goes out when this many trials ended... (a commit's syncs and the pages it
#: rewrites are shared by more trials: 256 a transaction recorded 1.17-1.36x the trials a
#: second of 64 on benchmarks/bulk_writes.py's workload, three paired runs; a batch is still cut
#: after BATCH_S, so the MLflow view lags a trial's end by about a second at most)
BATCH_TRIALS = 256
#: ...or when its first line has waited this many seconds.
BATCH_S = 1.0
#: Writer threads on a tracking server, each writing trials of its own. A server's request
#: (~50 ms) is mostly waiting, not CPU: through an mlflow server on PostgreSQL, 2 client
#: threads wrote 1.66x and 4 threads 2.70x the trials/s of one (3.4), with no failed write
#: (benchmarks/results/tracking_server.md). A sqlite file, or a folder, keeps one writer:
#: concurrent writers there would only wait for its lock.
SERVER_WRITERS = 4


def _now_ms() -> int:
    return int(time.time() * 1000)  # as Tracker.buffer_metrics stamps an epoch


def trial_label(record: TrialRecord) -> str:
    """Reads well in the MLflow UI: "trial 2-07 lr=3.1e-02 relu/he/bn"."""
    p = record.params
    parts = [f"trial {record.name}"]
    for key in ("lr", "weight_decay", "dropout"):
        if key in record.sampled:
            parts.append(f"{'wd' if key == 'weight_decay' else key}={p[key]:.1e}")
    if "activation" in p:  # the factory's choices; a trainable's keys are its own
        parts.append(f"{p['activation']}/{p.get('init')}/{'bn' if p.get('batchnorm') else 'nobn'}")
    return " ".join(parts)


def end_tags(record: TrialRecord) -> tuple[dict[str, Any], str]:
    """An ended trial's run tags and MLflow status."""
    if record.status is TrialStatus.FAILED:
        tags: dict[str, Any] = {"hpo.status": record.status, "hpo.error": record.error}
        status = "FAILED"
    else:
        tags = {"hpo.status": record.status, "hpo.epochs": len(record.history),
                "hpo.flags": ",".join(record.flags) or "none"}
        status = "FINISHED"
    tags.update({"hpo.node": record.node or "unknown", "hpo.attempts": record.attempts})
    return tags, status


def start_tags(record: TrialRecord, round_index: int) -> dict[str, str]:
    """A trial run's tags while it runs (``end_tags`` adds to them when it ends)."""
    return {"hpo.round": str(round_index), "hpo.trial": record.name,
            "hpo.status": TrialStatus.RUNNING, "hpo.kind": "trial"}


def bulk_runs(tracker: Tracker) -> Any:
    """A ``BulkRuns`` on the tracker's store when trials may be written in bulk there (a local
    sqlite store of the MLflow version bulk.py copies), else None."""
    if os.environ.get(ONE_BY_ONE_ENV, "") not in ("", "0") or not tracker.uri.startswith(
            "sqlite:"):
        return None
    from hpo.tracking.bulk import BulkRuns

    if tracker.experiment_id is None:
        tracker.ensure_experiment()
    runs = BulkRuns(tracker.uri, tracker.experiment_id)
    return runs if runs.bulk else None


class RoundWriter:
    """The trial events of round ``round_index`` as MLflow runs under ``round_run`` and journal
    lines; ``drain()`` when the round ends.

    The way its trials are written (``_BulkTrials`` or ``_OneByOneTrials``) is chosen here,
    once, and writes each event; what is the same both ways stays here: draining the writer
    threads, their first failure, and which runs a stop leaves to end. ``server_writers``:
    the writer threads on a tracking server (one elsewhere)."""

    def __init__(self, tracker: Tracker, journal: Journal, *, round_index: int,
                 round_run: str, server_writers: int = SERVER_WRITERS) -> None:
        self.tracker, self.journal = tracker, journal
        self.round, self.round_run = round_index, round_run
        self.bulk = bulk_runs(tracker)
        way = (tracker, journal, round_index, round_run)
        self._trials = (_BulkTrials(self.bulk, *way) if self.bulk
                        else _OneByOneTrials(*way, server_writers=server_writers))
        self.writer = self._trials.writer
        self._ending: set[str] = set()  # the trials handed to ``ended`` here (driver thread)

    def drain(self) -> None:
        if self.writer.error is None:
            self._trials.drain()
        self.writer.drain()

    @property
    def failure(self) -> BaseException | None:
        """The write that failed (a full disk, a store gone), if one did."""
        return self.writer.error

    def abandon(self, records: Iterable[TrialRecord], status: str) -> None:
        """The round stops (``status`` KILLED: a signal; FAILED: an error): the queued writes
        go out, then the runs not ended (trials still running, or whose end could not be
        written) end with ``status``, with their params. Their epochs are not written:
        ``--resume`` runs those trials again, into the same runs."""
        try:
            self.drain()
        finally:
            left = []
            for record in records:
                # not the trials that ended before a resume: their runs are ended already
                ours = not record.finished or record.trial_id in self._ending
                if ours and record.run_id and record.run_id not in self._trials.closed:
                    left.append(record)
            self._trials.abandon(left, status)

    # -- the callback's events (driver thread) ------------------------------------------------
    def started(self, record: TrialRecord) -> None:
        self._trials.started(record)

    def restarted(self, record: TrialRecord) -> None:
        """A retry after a failure, or a cut-short trial run again: its epochs start over."""
        self._trials.restarted(record)

    def rekeyed(self, record: TrialRecord, old: str) -> None:
        self._trials.rekeyed(record, old)

    def epoch(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        self._trials.epoch(record, metrics, step)

    def ended(self, record: TrialRecord) -> None:
        self._ending.add(record.trial_id)
        self._trials.ended(record)


class _Trials(ABC):
    """One way of writing a round's trials (the module docstring's two). Its event methods run
    on the driver's thread and queue their writes on ``writer``: one thread that runs them in
    order, or several that run each trial's in order; ``ended_count`` and ``closed`` are the
    writer threads'."""

    def __init__(self, tracker: Tracker, journal: Journal, round_index: int, round_run: str,
                 writer: Writer | Writers) -> None:
        self.tracker, self.journal = tracker, journal
        self.round, self.round_run = round_index, round_run
        self.writer = writer
        self.ended_count = 0  # trials whose end was written: the N of CRASH_ENV's points
        self.closed: set[str] = set()  # the runs this writer ended

    @abstractmethod
    def started(self, record: TrialRecord) -> None: ...

    @abstractmethod
    def restarted(self, record: TrialRecord) -> None:
        """A retry after a failure, or a cut-short trial run again: its epochs start over."""

    @abstractmethod
    def rekeyed(self, record: TrialRecord, old: str) -> None:
        """A trial cut short runs again under a new Tune trial id, into the same run."""

    @abstractmethod
    def epoch(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None: ...

    @abstractmethod
    def ended(self, record: TrialRecord) -> None: ...

    def drain(self) -> None:
        """The round ends: queue the writes this way holds back (none unless overridden)."""

    @abstractmethod
    def abandon(self, records: list[TrialRecord], status: str) -> None:
        """End the runs of ``records`` (their trials did not end) with ``status`` and their
        params; called once the writer thread has stopped."""

    def _end_runs(self, records: Iterable[TrialRecord], status: str) -> None:
        for record in records:
            self.tracker.discard(record.run_id)
            self.tracker.end_run(record.run_id, status)


class _OneByOneTrials(_Trials):
    """``Tracker``'s calls: a run created when its trial starts, its metrics and end when it
    ends; on a tracking server, ``SERVER_WRITERS`` trials at once, each on its own thread."""

    writer: Writers

    def __init__(self, tracker: Tracker, journal: Journal, round_index: int,
                 round_run: str, *, server_writers: int) -> None:
        server = tracker.uri.startswith(("http://", "https://"))
        super().__init__(tracker, journal, round_index, round_run,
                         Writers(server_writers if server else 1))
        self._steps: dict[str, list[int]] = {}  # trial id -> its epochs' MLflow steps
        self._ends = threading.Lock()  # ended_count and closed, of every writer thread

    # -- the callback's events (driver thread) ------------------------------------------------
    def started(self, record: TrialRecord) -> None:
        self._on(record).write(self._start_run, record, record.to_json())

    def restarted(self, record: TrialRecord) -> None:
        self._steps.pop(record.trial_id, None)
        self._on(record).write(self._discard, record)

    def rekeyed(self, record: TrialRecord, old: str) -> None:
        self.writer.moved(old, record.trial_id)
        self.restarted(record)
        self._on(record).write(self._reopen, record)
        self._on(record).write(self.journal.append, "trial_rekey", round=self.round, old=old,
                               new=record.trial_id)

    def epoch(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        self._steps.setdefault(record.trial_id, []).append(step)
        self._on(record).write(self._buffer, record, metrics, step)

    def ended(self, record: TrialRecord) -> None:
        tags, status = end_tags(record)
        steps = self._steps.pop(record.trial_id, [])
        self._on(record).write(self._end_run, record, tags, status, record.to_json(), steps)

    def _on(self, record: TrialRecord) -> Writer:
        """The thread of the trial's writes (``rekeyed`` moves it to the new trial id)."""
        return self.writer.on(record.trial_id)

    def abandon(self, records: list[TrialRecord], status: str) -> None:
        self._end_runs(records, status)

    # -- on the writer thread -----------------------------------------------------------------
    def _start_run(self, record: TrialRecord, payload: dict[str, Any]) -> None:
        record.run_id = payload["run_id"] = self.tracker.start_run(
            trial_label(record), parent=self.round_run, params=record.params,
            tags=start_tags(record, self.round))
        self.journal.append("trial_start", record=payload)

    def _discard(self, record: TrialRecord) -> None:
        self.tracker.discard(record.run_id)  # run_id is set on this thread, by _start_run

    def _reopen(self, record: TrialRecord) -> None:
        self.tracker.client.update_run(record.run_id, status="RUNNING")  # was KILLED

    def _buffer(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        self.tracker.buffer_metrics(record.run_id, metrics, step=step)

    def _end_run(self, record: TrialRecord, tags: dict[str, Any], status: str,
                 payload: dict[str, Any], steps: list[int]) -> None:
        # The journal first: a trial MLflow shows ended is one the journal holds, so a killed
        # driver's --resume never runs it again into its run (each epoch logged twice). A kill
        # between the two leaves the run RUNNING, which --resume completes from the journal.
        payload["run_id"] = record.run_id
        self.journal.append("trial_end", record=payload, steps=steps)
        self.tracker.flush(record.run_id, tags)
        with self._ends:
            self.ended_count += 1
            n = self.ended_count
        _crash_point(f"trial-metrics:{self.round}:{n}")
        self.tracker.client.set_terminated(record.run_id, status=status)
        with self._ends:
            self.closed.add(record.run_id)


class _BulkTrials(_Trials):
    """``BulkRuns``: a trial's run written once it has ended, in batches, its journal lines
    group-committed before them."""

    def __init__(self, runs: Any, tracker: Tracker, journal: Journal, round_index: int,
                 round_run: str) -> None:
        super().__init__(tracker, journal, round_index, round_run,
                         Writer(idle=self._caught_up))
        self.runs = runs  # BulkRuns
        # the driver thread's
        self._epochs: dict[str, list[tuple[int, int, dict[str, float]]]] = {}  # (step, ms, m)
        self._started: dict[str, int] = {}  # trial id -> when it (last) started, ms
        # the writer thread's
        self._lines: list[tuple[str, dict[str, Any]]] = []  # journal lines not yet written
        self._batch: list[tuple[TrialRecord, Any]] = []  # (record, TrialRun) not yet written
        self._since: float | None = None  # when the oldest of the batch came (monotonic)
        self._existing: set[str] = set()  # runs in the store before their trial ended

    # -- the callback's events (driver thread) ------------------------------------------------
    def started(self, record: TrialRecord) -> None:
        from hpo.tracking.bulk import new_run_id

        record.run_id = new_run_id()
        self._started[record.trial_id] = _now_ms()
        self.writer.write(self._line, "trial_start", {"record": record.to_json()})

    def restarted(self, record: TrialRecord) -> None:
        self._epochs.pop(record.trial_id, None)

    def rekeyed(self, record: TrialRecord, old: str) -> None:
        self.restarted(record)
        self._started[record.trial_id] = _now_ms()
        self.writer.write(self._reopen_if_there, record)
        self.writer.write(self._line, "trial_rekey",
                          {"round": self.round, "old": old, "new": record.trial_id})

    def epoch(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        self._epochs.setdefault(record.trial_id, []).append((step, _now_ms(), metrics))

    def ended(self, record: TrialRecord) -> None:
        tags, status = end_tags(record)
        epochs = self._epochs.pop(record.trial_id, [])
        start = self._started.pop(record.trial_id, None)
        self.writer.write(self._collect, record, tags, status, record.to_json(), epochs,
                          start, _now_ms())

    def drain(self) -> None:
        """The round ends: the journal lines and runs that wait go out (``_flush``)."""
        self.writer.write(self._flush)

    def abandon(self, records: list[TrialRecord], status: str) -> None:
        from hpo.tracking.bulk import TrialRun

        now = _now_ms()
        self.runs.write([TrialRun(
            name=trial_label(r), start_time=self._started.get(r.trial_id, now), end_time=now,
            status=status, parent_run_id=self.round_run, params=r.params,
            tags=start_tags(r, self.round), run_id=r.run_id)
            for r in records if r.run_id not in self._existing])  # a run there stays as it is
        # reopened after a stop: ended as one by one would, in the store they are in
        self._end_runs((r for r in records if r.run_id in self._existing), status)

    # -- on the writer thread -----------------------------------------------------------------
    def _line(self, event: str, data: dict[str, Any]) -> None:
        self._lines.append((event, data))
        if len(self._lines) >= 4 * BATCH_TRIALS:  # the writer never catches up: write anyway
            self._journal()

    def _reopen_if_there(self, record: TrialRecord) -> None:
        """A trial cut short runs again: its run is in the store if a stop ended it KILLED
        (then it is reopened, and ended one by one), not if the driver was killed."""
        from mlflow.exceptions import MlflowException

        try:
            self.tracker.client.update_run(record.run_id, status="RUNNING")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return
        self._existing.add(record.run_id)

    def _collect(self, record: TrialRecord, tags: dict[str, Any], status: str,
                 payload: dict[str, Any], epochs: list[tuple[int, int, dict[str, float]]],
                 start: int | None, end: int) -> None:
        from hpo.tracking.bulk import TrialRun, metric_history

        start = end if start is None else start
        payload["run_id"] = record.run_id
        self._line("trial_end", {"record": payload, "steps": [s for s, _, _ in epochs],
                                 "times": [start, end, [t for _, t, _ in epochs]]})
        self._batch.append((record, TrialRun(
            name=trial_label(record), start_time=start, end_time=end, status=status,
            parent_run_id=self.round_run, params=record.params,
            metrics=metric_history(epochs), tags=start_tags(record, self.round),
            end_tags=tags, run_id=record.run_id)))
        if self._since is None:
            self._since = time.monotonic()
        self._flush_due()

    def _caught_up(self) -> None:
        """No event waits: the journal lines that came go out together (one fsync), and the
        batch of runs if it is due."""
        self._journal()
        self._flush_due()

    def _journal(self) -> None:
        lines, self._lines = self._lines, []
        self.journal.append_many(lines)

    def _flush_due(self) -> None:
        if self._batch and (len(self._batch) >= BATCH_TRIALS
                            or time.monotonic() - self._since >= BATCH_S):
            self._flush()

    def _flush(self) -> None:
        """The waiting journal lines (one write, one fsync), then the waiting runs (one
        transaction). A kill between the two leaves trials the journal holds ended and MLflow
        lacks: ``--resume`` writes them from the journal (``resume.drop_unjournaled_runs``)."""
        self._journal()
        batch, self._batch, self._since = self._batch, [], None
        if not batch:
            return
        first = self.ended_count + 1
        self.ended_count += len(batch)
        crash = os.environ.get(CRASH_ENV, "")
        names = {f"trial-batch:{self.round}:{n}" for n in range(first, self.ended_count + 1)}
        self.runs.write([run for record, run in batch if record.run_id not in self._existing],
                        before_commit=(lambda: _crash_point(crash)) if crash in names else None)
        for record, run in batch:
            if record.run_id in self._existing:  # reopened: what it lacks, one by one
                self._finish_existing(run)
            self.closed.add(record.run_id)

    def _finish_existing(self, run: Any) -> None:
        """Log_batch of the run's metrics (MLflow takes 1,000 a call; the end tags with the
        first) and its end: what ``Tracker.end_run`` writes, with the times the trial had."""
        from mlflow.entities import Metric, RunTag

        metrics = [Metric(k, v, ts, step) for k, v, step, ts in run.metrics]
        tags = [RunTag(k, str(v)) for k, v in run.end_tags.items()]
        for i in range(0, max(len(metrics), 1), 1000):
            self.tracker.client.log_batch(run.run_id, metrics=metrics[i:i + 1000],
                                          tags=tags if i == 0 else [])
        self.tracker.client.set_terminated(run.run_id, status=run.status, end_time=run.end_time)


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
