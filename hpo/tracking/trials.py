"""A round's trials in MLflow and the journal: the Tune callback's events, written in order.

Trials never talk to MLflow: the round's callback hands each event here, and one writer thread
writes it, so Tune's loop (which hands the next trial to a free actor) never waits on a
database. A record's ``run_id`` is set by that thread, so every write that needs it is queued
behind the trial's start.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from typing import Any

from hpo.tracking.journal import Journal
from hpo.tracking.store import Tracker
from hpo.tracking.writer import Writer
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus

__all__ = ["RoundWriter", "end_tags", "trial_label"]

#: A test's way to kill the driver (a real SIGKILL) at the instant a crash hurts most: after the
#: metrics of round K's N-th trial to end reached MLflow, before its run is marked ended
#: ("trial-metrics:K:N").
CRASH_ENV = "HPO_TEST_SIGKILL_AT"


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


class RoundWriter:
    """The trial events of round ``round_index`` as MLflow runs under ``round_run`` and journal
    lines; ``drain()`` when the round ends."""

    def __init__(self, tracker: Tracker, journal: Journal, *, round_index: int,
                 round_run: str) -> None:
        self.tracker, self.journal = tracker, journal
        self.round, self.round_run = round_index, round_run
        self.writer = Writer()
        self._steps: dict[str, list[int]] = {}  # trial id -> its epochs' MLflow steps
        self._ended = 0
        self._ending: set[str] = set()  # the trials handed to ``ended`` here (driver thread)
        self._closed: set[str] = set()  # the runs this writer ended (writer thread)

    def drain(self) -> None:
        self.writer.drain()

    @property
    def failure(self) -> BaseException | None:
        """The write that failed (a full disk, a store gone), if one did."""
        return self.writer.error

    def abandon(self, records: Iterable[TrialRecord], status: str) -> None:
        """The round stops (``status`` KILLED: a signal; FAILED: an error): the queued writes
        go out, then the runs not ended (trials still running, or whose end could not be
        written) end with ``status``. Their epochs are not written: ``--resume`` runs those
        trials again, into the same runs."""
        try:
            self.writer.drain()
        finally:
            for record in records:
                # not the trials that ended before a resume: their runs are ended already
                ours = not record.finished or record.trial_id in self._ending
                if ours and record.run_id and record.run_id not in self._closed:
                    self.tracker.discard(record.run_id)
                    self.tracker.end_run(record.run_id, status)

    # -- the callback's events (driver thread) ------------------------------------------------
    def started(self, record: TrialRecord) -> None:
        self.writer.write(self._start_run, record, record.to_json())

    def restarted(self, record: TrialRecord) -> None:
        """A retry after a failure, or a cut-short trial run again: its epochs start over."""
        self._steps.pop(record.trial_id, None)
        self.writer.write(self._discard, record)

    def rekeyed(self, record: TrialRecord, old: str) -> None:
        self.restarted(record)
        self.writer.write(self._reopen, record)
        self.writer.write(self.journal.append, "trial_rekey", round=self.round, old=old,
                          new=record.trial_id)

    def epoch(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        self._steps.setdefault(record.trial_id, []).append(step)
        self.writer.write(self._buffer, record, metrics, step)

    def ended(self, record: TrialRecord) -> None:
        tags, status = end_tags(record)
        self._ending.add(record.trial_id)
        steps = self._steps.pop(record.trial_id, [])
        self.writer.write(self._end_run, record, tags, status, record.to_json(), steps)

    # -- on the writer thread -----------------------------------------------------------------
    def _start_run(self, record: TrialRecord, payload: dict[str, Any]) -> None:
        record.run_id = payload["run_id"] = self.tracker.start_run(
            trial_label(record), parent=self.round_run, params=record.params,
            tags={"hpo.round": str(self.round), "hpo.trial": record.name,
                  "hpo.status": TrialStatus.RUNNING, "hpo.kind": "trial"},
        )
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
        self._ended += 1
        _crash_point(f"trial-metrics:{self.round}:{self._ended}")
        self.tracker.client.set_terminated(record.run_id, status=status)
        self._closed.add(record.run_id)


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
