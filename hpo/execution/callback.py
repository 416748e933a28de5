"""The driver's Ray Tune callback: Tune's trial events -> trial records -> a sink.

It imports nothing of tracking or reporting: the study gives it a ``TrialEvents`` sink (MLflow
and the journal) and a progress function, and it hands each event on in Tune's order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

from ray.tune import Callback

from hpo.config.spec import Spec
from hpo.execution import _ray_private
from hpo.execution.interrupt import INTERRUPTS, RoundInterrupted
from hpo.execution.packed_search import PACK_KEY, member_key
from hpo.space.bridge import decode
from hpo.space.distributions import Distribution
from hpo.trial.metrics import EPOCH_KEY, is_trial_metric, reported_values
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus, classify, trial_flags

__all__ = ["StudyCallback", "TrialEvents"]


class TrialEvents(Protocol):
    """Where a round's trial events go, in Tune's order, on the driver's thread."""

    def started(self, record: TrialRecord) -> None: ...

    def restarted(self, record: TrialRecord) -> None:
        """A retry after a failure: same record, its epochs start over."""

    def rekeyed(self, record: TrialRecord, old: str) -> None:
        """A trial cut short by an interruption runs again under a new Tune trial id."""

    def epoch(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None: ...

    def ended(self, record: TrialRecord) -> None:
        """Finished (status and flags set) or failed (status FAILED, ``error`` set)."""


def _trial_index(trial: Any, fallback: int) -> int:
    """1-based creation order. With a searcher, Tune's trial ids are 8 random hex digits (some
    all decimal) and the counter, from 1, leads the experiment tag ("3_lr=0.01"); without one,
    ids end in a counter from 0 ("ab12c_00000")."""
    if "_" in trial.trial_id:
        tail = trial.trial_id.rsplit("_", 1)[-1]
        return int(tail) + 1 if tail.isdigit() else fallback
    head = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]
    return int(head) if head.isdigit() else fallback


class StudyCallback(Callback):
    """Receives Tune's trial events in the driver, keeps the round's trial records, and hands
    each event to ``events``; ``progress`` sees the records after each trial ends.

    ``known`` are the round's records the journal already holds (an interrupted round going
    on); those still running were cut short and run again with the same values.

    Ray Tune pickles its callbacks with the experiment (for ``Tuner.restore``, which hpo does
    not use: it resumes from its journal); the sink and the records stay behind.
    """

    def __init__(self, *, spec: Spec, ranges: Mapping[str, Distribution], round_index: int,
                 events: TrialEvents, known: Iterable[TrialRecord] = (),
                 progress: Callable[[Collection[TrialRecord]], None] | None = None,
                 num_classes: int = 10, continued: bool = False) -> None:
        self.spec, self.ranges, self.round = spec, dict(ranges), round_index
        self.events, self.progress, self.num_classes = events, progress, num_classes
        self.continued = continued  # an interrupted round going on: index after its trials
        self.records: dict[str, TrialRecord] = {r.trial_id: r for r in known}
        # cut short by an interruption, to run again (pack members are dropped, not rerun)
        self._cut = [r for key, r in self.records.items()
                     if r.status is TrialStatus.RUNNING and "#" not in key]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "events": None, "progress": None, "records": {}, "_cut": []}

    # -- Tune hooks ---------------------------------------------------------------------------
    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # A signal mid-step only marked the study: stop here, between steps, where Tune cleans
        # up after an exception (its trial actors stop) before passing it on.
        if INTERRUPTS.pending:
            raise RoundInterrupted(f"round {self.round} interrupted")

    def _members(self, trial: Any) -> list[tuple[str, dict[str, Any]]]:
        """(record key, sampled config) of each trial a Ray trial carries: one, or a pack."""
        config = trial.config or {}
        if PACK_KEY in config:
            return [(f"{trial.trial_id}#{i}", m) for i, m in enumerate(config[PACK_KEY])]
        return [(trial.trial_id, config)]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key, config in self._members(trial):
            record = self.records.get(key)
            if record is not None:
                # A retry after a failure: same record, same MLflow run, epochs start over.
                if not record.finished:
                    record.status = TrialStatus.RUNNING
                    record.attempts = max(record.attempts, trial.num_failures + 1)
                    record.history.clear()
                    self.events.restarted(record)
                continue
            sampled = decode(self.ranges, config) if self.ranges else {}
            if self._claim(key, sampled):
                continue
            # one trial: Tune's creation counter; a pack's members: in order after the others.
            # A continued round counts on from the trials it already has.
            index = (len(self.records) + 1 if key != trial.trial_id or self.continued
                     else _trial_index(trial, len(self.records) + 1))
            record = TrialRecord(round=self.round, index=index, trial_id=key,
                                 params=self.spec.resolve(sampled), sampled=sampled)
            self.records[key] = record
            self.events.started(record)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        packed = PACK_KEY in (trial.config or {})
        epochs = result.get("epochs")  # the epochs since the trial's last report
        for epoch in epochs or [result]:
            for i, (key, _) in enumerate(self._members(trial)):
                record = self.records.get(key)
                if record is None or record.finished:
                    continue
                if packed:  # member i's keys are "m<i>/<metric>"; a diverged one has none left
                    prefix = member_key(i, "")
                    own = {k[len(prefix):]: v for k, v in epoch.items() if k.startswith(prefix)}
                else:
                    own = epoch
                # hpo's trainables report epochs as reported; a bare result holds Tune's keys too
                metrics = (reported_values(own) if epochs
                           else {k: v for k, v in own.items() if is_trial_metric(k)})
                if not metrics:
                    continue
                record.history.append(metrics)
                record.node = result.get("node", record.node)
                self.events.epoch(record, metrics, int(own.get(EPOCH_KEY, 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key, _ in self._members(trial):
            record = self.records.get(key)
            if record is None or record.finished:
                continue
            record.status = classify(record.last, gap_threshold=self.spec.gap.threshold,
                                     num_classes=self.num_classes)
            record.flags = trial_flags(record.last)
            self.events.ended(record)
        self._progress()
        _ray_private.release_trial_state(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _first_error_line(trial)
        for key, _ in self._members(trial):
            record = self.records.get(key)
            if record is None or record.finished:
                continue
            record.status, record.error = TrialStatus.FAILED, error
            self.events.ended(record)
        self._progress()

    def _claim(self, key: str, sampled: dict[str, Any]) -> bool:
        """A trial cut short by an interruption runs again under a new id with the same
        values: it keeps its record, its index and its MLflow run."""
        for record in self._cut:  # only the journal's: no scan of every trial per trial
            old = record.trial_id
            if record.status is TrialStatus.RUNNING and old != key and record.sampled == sampled:
                self._cut.remove(record)
                del self.records[old]
                record.trial_id, record.history = key, []
                self.records[key] = record
                self.events.rekeyed(record, old)
                return True
        return False

    def _progress(self) -> None:
        if self.progress is not None:
            self.progress(self.records.values())


def _first_error_line(trial: Any) -> str:
    error = getattr(trial, "error_message", None) or ""
    if not error and getattr(trial, "error_file", None):
        try:
            with open(trial.error_file) as fh:
                error = fh.read()
        except OSError:
            error = ""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "trial raised an error"
