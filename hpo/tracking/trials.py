"""A round's trials in MLflow and the journal: the Tune callback's events, written in order.

Trials never talk to MLflow: the round's callback hands each event here, and one writer thread
writes it, so Tune's loop (which hands the next trial to a free actor) never waits on a
database. A record's ``run_id`` is set by that thread, so every write that needs it is queued
behind the trial's start.
"""

from __future__ import annotations

from typing import Any

from hpo.tracking.journal import Journal
from hpo.tracking.store import Tracker
from hpo.tracking.writer import Writer
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus

__all__ = ["RoundWriter", "trial_label"]


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


class RoundWriter:
    """The trial events of round ``round_index`` as MLflow runs under ``round_run`` and journal
    lines; ``drain()`` when the round ends."""

    def __init__(self, tracker: Tracker, journal: Journal, *, round_index: int,
                 round_run: str) -> None:
        self.tracker, self.journal = tracker, journal
        self.round, self.round_run = round_index, round_run
        self.writer = Writer()

    def drain(self) -> None:
        self.writer.drain()

    # -- the callback's events (driver thread) ------------------------------------------------
    def started(self, record: TrialRecord) -> None:
        self.writer.write(self._start_run, record, record.to_json())

    def restarted(self, record: TrialRecord) -> None:
        """A retry after a failure, or a cut-short trial run again: its epochs start over."""
        self.writer.write(self._discard, record)

    def rekeyed(self, record: TrialRecord, old: str) -> None:
        self.restarted(record)
        self.writer.write(self.journal.append, "trial_rekey", round=self.round, old=old,
                          new=record.trial_id)

    def epoch(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        self.writer.write(self._buffer, record, metrics, step)

    def ended(self, record: TrialRecord) -> None:
        if record.status is TrialStatus.FAILED:
            tags: dict[str, Any] = {"hpo.status": record.status, "hpo.error": record.error}
            status = "FAILED"
        else:
            tags = {"hpo.status": record.status, "hpo.epochs": len(record.history),
                    "hpo.flags": ",".join(record.flags) or "none"}
            status = "FINISHED"
        tags.update({"hpo.node": record.node or "unknown", "hpo.attempts": record.attempts})
        self.writer.write(self._end_run, record, tags, status, record.to_json())

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

    def _buffer(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        self.tracker.buffer_metrics(record.run_id, metrics, step=step)

    def _end_run(self, record: TrialRecord, tags: dict[str, Any], status: str,
                 payload: dict[str, Any]) -> None:
        self.tracker.end_run(record.run_id, status, tags=tags)
        payload["run_id"] = record.run_id
        self.journal.append("trial_end", record=payload)
