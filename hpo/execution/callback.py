"""The driver's Ray Tune callback: trial results -> MLflow runs, trial records, progress line."""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune import Callback

from hpo._pack_search import PACK_KEY
from hpo.journal import Journal, TrialRecord, ranked
from hpo.space import Distribution
from hpo.spec import Spec
from hpo.tracking import Tracker
from hpo.tune import decode

__all__ = ["StudyCallback", "classify", "trial_flags", "trial_label"]

#: Writes (MLflow, journal) that may wait for the writer thread before a trial event waits.
WRITE_BACKLOG = 256
#: On a terminal, the progress line is redrawn at most this often (seconds).
PROGRESS_INTERVAL_S = 0.2
#: Below this train and val accuracy (as a multiple of chance) a trial is "underfitting".
UNDERFIT_OVER_CHANCE = 3.0


def trial_label(record: TrialRecord) -> str:
    """Reads well in the MLflow UI: "trial 2-07 lr=3.1e-02 relu/he/bn"."""
    p = record.params
    parts = [f"trial {record.name}"]
    for key in ("lr", "weight_decay", "dropout"):
        if key in record.sampled:
            parts.append(f"{'wd' if key == 'weight_decay' else key}={p[key]:.1e}")
    parts.append(f"{p.get('activation')}/{p.get('init')}/{'bn' if p.get('batchnorm') else 'nobn'}")
    return " ".join(parts)


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
    """Receives Tune's trial events in the driver, in order, and journals every trial.

    MLflow and the journal are written by one background thread, in the order of the events,
    so that Tune's loop (which hands the next trial to a free actor) never waits on a database;
    ``drain()`` waits for every write, and is called when the round ends. A record's
    ``run_id`` is set by that thread, so everything that needs it is queued behind its start.

    Ray Tune pickles its callbacks into the experiment folder; this one pickles only its
    settings (not the MLflow client), and rebuilds the client and its trial records (from the
    journal) if it is ever unpickled.
    """

    def __init__(self, *, spec: Spec, ranges: Mapping[str, Distribution], round_index: int,
                 round_run: str, tracker: Tracker, journal: Journal, total: int,
                 quiet: bool = False, num_classes: int = 10, continued: bool = False) -> None:
        self.spec, self.ranges, self.round = spec, dict(ranges), round_index
        self.round_run, self.tracker, self.total, self.quiet = round_run, tracker, total, quiet
        self.journal, self.num_classes = journal, num_classes
        self.continued = continued  # an interrupted round going on: index after its trials
        self._records: dict[str, TrialRecord] | None = None
        self._cut: list[TrialRecord] = []  # cut short by an interruption, to run again
        self._tty = sys.stderr.isatty()
        self._milestone = 0
        self._shown = -math.inf  # when the terminal's progress line was last drawn
        self._writer: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._error: BaseException | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["tracker"] = (self.tracker.uri, self.tracker.experiment_name)
        state.update(_records=None, _cut=[], _writer=None, _queue=None, _error=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if isinstance(self.tracker, tuple):
            self.tracker = Tracker(*self.tracker)
            self.tracker.ensure_experiment()

    @property
    def records(self) -> dict[str, TrialRecord]:
        """This round's trials: those the journal already holds, then those seen since."""
        if self._records is None:
            self._records = {r.trial_id: r for r in self.journal.replay().round_records(self.round)}
            self._cut = [r for key, r in self._records.items()
                         if r.status == "running" and "#" not in key]
        return self._records

    # -- writes -------------------------------------------------------------------------------
    def _write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` on the writer thread, after every write queued before it.

        At most WRITE_BACKLOG writes wait; past that the event waits too, so trials that end
        faster than the store takes them slow down to its pace instead of piling up in memory.
        A write that failed is raised at the next event (and by ``drain``); the writes queued
        after it are dropped, so the journal never holds a trial's end without its start."""
        if self._error is not None:
            raise self._error
        if self._writer is None:
            self._queue = queue.Queue(maxsize=WRITE_BACKLOG)
            self._writer = threading.Thread(target=self._writes, name="hpo-tracking",
                                            daemon=True)
            self._writer.start()
        self._queue.put((fn, args, kwargs))

    def _writes(self) -> None:
        while (item := self._queue.get()) is not None:
            self._run(*item)

    def _run(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> None:
        if self._error is None:
            try:
                fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the driver thread
                self._error = exc

    def drain(self) -> None:
        """Wait for every queued write; one that failed is raised here."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        if self._error is not None:
            raise self._error

    def _start_run(self, record: TrialRecord, payload: dict[str, Any]) -> None:
        record.run_id = payload["run_id"] = self.tracker.start_run(
            trial_label(record), parent=self.round_run, params=record.params,
            tags={"hpo.round": str(self.round), "hpo.trial": record.name,
                  "hpo.status": "running", "hpo.kind": "trial"},
        )
        self.journal.append("trial_start", record=payload)

    def _end_run(self, record: TrialRecord, tags: dict[str, Any], status: str,
                 payload: dict[str, Any]) -> None:
        self.tracker.end_run(record.run_id, status, tags=tags)
        payload["run_id"] = record.run_id
        self.journal.append("trial_end", record=payload)

    def _buffer(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        self.tracker.buffer_metrics(record.run_id, metrics, step=step)

    def _discard(self, record: TrialRecord) -> None:
        self.tracker.discard(record.run_id)

    # -- Tune hooks ---------------------------------------------------------------------------
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
                    record.status = "running"
                    record.attempts = max(record.attempts, trial.num_failures + 1)
                    record.history.clear()
                    self._write(self._discard, record)
                continue
            sampled = decode(self.ranges, config) if self.ranges else {}
            if self._claim(key, sampled):
                continue
            # one trial: Tune's creation counter; a pack's members: in order after the others.
            # A continued round counts on from the trials it already has.
            index = (len(self.records) + 1 if key != trial.trial_id or self.continued
                     else _trial_index(trial, len(self.records) + 1))
            record = TrialRecord(
                round=self.round, index=index,
                trial_id=key, params=self.spec.resolve(sampled), sampled=sampled,
            )
            self.records[key] = record
            self._write(self._start_run, record, record.to_json())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        packed = PACK_KEY in (trial.config or {})
        for epoch in result.get("epochs") or [result]:  # the epochs since the trial's last report
            for i, (key, _) in enumerate(self._members(trial)):
                record = self.records.get(key)
                if record is None or record.finished:
                    continue
                if packed:  # member i's keys are "m<i>/<metric>"; a diverged one has none left
                    prefix = f"m{i}/"
                    own = {k[len(prefix):]: v for k, v in epoch.items() if k.startswith(prefix)}
                else:
                    own = epoch
                metrics = {k: v for k, v in own.items() if _is_trial_metric(k)}
                if not metrics:
                    continue
                record.history.append(metrics)
                record.node = result.get("node", record.node)
                self._write(self._buffer, record, metrics, int(own.get("epoch", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key, _ in self._members(trial):
            record = self.records.get(key)
            if record is None or record.finished:
                continue
            record.status = self._status(record)
            record.flags = trial_flags(record)
            self._write(self._end_run, record, {
                "hpo.status": record.status, "hpo.epochs": len(record.history),
                "hpo.flags": ",".join(record.flags) or "none",
                "hpo.node": record.node or "unknown", "hpo.attempts": record.attempts},
                "FINISHED", record.to_json())
        self._progress(trials)
        _release(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _first_error_line(trial)
        for key, _ in self._members(trial):
            record = self.records.get(key)
            if record is None or record.finished:
                continue
            record.status, record.error = "failed", error
            self._write(self._end_run, record, {
                "hpo.status": "failed", "hpo.error": error,
                "hpo.node": record.node or "unknown", "hpo.attempts": record.attempts},
                "FAILED", record.to_json())
        self._progress(trials)

    def _claim(self, key: str, sampled: dict[str, Any]) -> bool:
        """A trial cut short by an interruption runs again under a new id with the same
        values: it keeps its record, its index and its MLflow run."""
        for record in self._cut:  # only the journal's: no scan of every trial per trial
            old = record.trial_id
            if record.status == "running" and old != key and record.sampled == sampled:
                self._cut.remove(record)
                del self.records[old]
                record.trial_id, record.history = key, []
                self.records[key] = record
                self._write(self._discard, record)
                self._write(self.journal.append, "trial_rekey", round=self.round, old=old, new=key)
                return True
        return False

    # -- helpers ------------------------------------------------------------------------------
    def _status(self, record: TrialRecord) -> str:
        return classify(record.last, gap_threshold=self.spec.gap.threshold,
                        num_classes=self.num_classes)

    def best(self) -> TrialRecord | None:
        best = ranked(self.records.values(), metric=self.spec.search.metric,
                      mode=self.spec.search.resolved_mode)[:1]
        return best[0] if best else None

    def _progress(self, trials: list) -> None:
        """The round's progress line: on a terminal redrawn at most every PROGRESS_INTERVAL_S
        (and when the round's last trial ends), else printed at each quarter of the round.
        Ranking the round's trials for its best is what costs; it happens only for a line
        that is printed, so a round of thousands of short trials does not rank them per trial."""
        if self.quiet:
            return
        done = sum(1 for r in self.records.values() if r.status != "running")
        if self._tty:
            now = time.monotonic()
            if done < self.total and now - self._shown < PROGRESS_INTERVAL_S:
                return
            self._shown = now
        else:
            step = max(1, self.total // 4)
            if done < self.total and done // step <= self._milestone:
                return
            self._milestone = done // step
        best = self.best()
        metric = self.spec.search.metric
        best_text = f"best {metric} {best.metric(metric):.4f}" if best else "no result yet"
        width = 24
        filled = int(width * done / max(self.total, 1))
        line = (f"round {self.round}/{self.spec.search.rounds} "
                f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} trials, "
                f"{best_text}")
        if self._tty:
            print(f"\r{line}", end="\n" if done >= self.total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


_BASE_METRICS = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "gap", "diverged",
                 "update_ratio"}


def _is_trial_metric(key: str) -> bool:
    return key in _BASE_METRICS or key.startswith(("update_ratio.", "act."))


def classify(last: Mapping[str, float], *, gap_threshold: float, num_classes: int) -> str:
    """A finished trial's status from its last epoch: diverged, overfitting (train - val
    accuracy above the threshold), underfitting (both accuracies near chance), else ok."""
    if last.get("diverged"):
        return "diverged"
    train, val = last.get("train_accuracy", 0.0), last.get("val_accuracy", 0.0)
    if train - val > gap_threshold:
        return "overfitting"
    if max(train, val) < min(0.5, UNDERFIT_OVER_CHANCE / num_classes):
        return "underfitting"
    return "ok"


def trial_flags(record: TrialRecord) -> list[str]:
    """Diagnostics worth a look: update/weight ratio far from ~1e-3, many dead or saturated units."""
    from hpo.diagnostics import UPDATE_RATIO_BAND

    last, flags = record.last, []
    ratio = last.get("update_ratio")
    if ratio is not None and math.isfinite(ratio):
        if ratio < UPDATE_RATIO_BAND[0]:
            flags.append("update-ratio-low")
        elif ratio > UPDATE_RATIO_BAND[1]:
            flags.append("update-ratio-high")
    if any(k.endswith(".dead") and v > 0.5 for k, v in last.items()):
        flags.append("dead-units")
    if any(k.endswith(".saturated") and v > 0.5 for k, v in last.items()):
        flags.append("saturated-units")
    return flags


def _release(trial: Any) -> None:
    """Drop what Ray Tune keeps of a finished trial that nothing reads any more.

    Tune holds every trial of a run until the run ends, each with its last result (here the
    trial's per-epoch metrics, which the journal and MLflow have by now) and a running
    average, minimum, maximum and two windows of every number it ever reported. Its scheduler
    and searcher have seen the trial's end before the callbacks do; hpo reads Tune's results
    only through this callback. So a round of thousands of trials keeps a few kilobytes of
    each in the driver, not tens.
    """
    meta = trial.run_metadata
    meta.last_result = {k: v for k, v in meta.last_result.items() if k != "epochs"}
    meta.metric_analysis, meta.metric_n_steps = {}, {}


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
