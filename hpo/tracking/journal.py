"""The study folder's journal: what ``--resume`` reads.

Append-only JSON lines, one per event (study start, sanity, round start/end, trial start/end),
each flushed and fsynced, so a driver killed at any instant leaves a readable prefix and an
event costs O(1) however long the study is. ``replay`` folds the lines into the study's state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Journal", "JournalState", "RoundState", "TrialRecord", "ranked"]


@dataclass
class TrialRecord:
    """One trial of the study, as the driver saw it."""

    round: int
    index: int  # 1-based, in creation (= sampling) order within the round
    trial_id: str
    params: dict[str, Any]  # every resolved hyperparameter
    sampled: dict[str, Any]  # only the searched ones
    run_id: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    status: str = "running"  # running | ok | diverged | overfitting | underfitting | failed
    error: str | None = None
    flags: list[str] = field(default_factory=list)  # e.g. update-ratio-high, dead-units
    node: str | None = None  # the Ray node that ran its last attempt
    attempts: int = 1  # 1 + retries after a failure (search.max_failures)

    @property
    def name(self) -> str:
        return f"{self.round}-{self.index:02d}"

    @property
    def last(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    def metric(self, key: str) -> float | None:
        import math

        value = self.last.get(key)
        return float(value) if value is not None and math.isfinite(value) else None

    @property
    def finished(self) -> bool:
        return self.status not in ("running", "failed")

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialRecord:
        record = cls(**data)
        record.params = {k: tuple(v) if isinstance(v, list) else v
                         for k, v in record.params.items()}
        record.sampled = {k: tuple(v) if isinstance(v, list) else v
                          for k, v in record.sampled.items()}
        return record


def ranked(records: Iterable[TrialRecord], *, metric: str, mode: str) -> list[TrialRecord]:
    """The trials that count, best first: finished, not diverged, with a finite ``metric``."""
    done = [r for r in records
            if r.finished and r.status != "diverged" and r.metric(metric) is not None]
    return sorted(done, key=lambda r: r.metric(metric), reverse=mode == "max")


@dataclass
class RoundState:
    index: int
    run_id: str
    ranges: dict[str, Any]  # YAML forms of the round's distributions
    done: bool = False
    next_ranges: dict[str, Any] | None = None
    stopped_early: bool = False
    resumes: int = 0  # times this round was continued after an interruption


@dataclass
class JournalState:
    fingerprint: str | None = None
    study_run_id: str | None = None
    sanity_done: bool = False
    finished: bool = False
    rounds: dict[int, RoundState] = field(default_factory=dict)
    trials: dict[tuple[int, str], TrialRecord] = field(default_factory=dict)

    def round_records(self, index: int) -> list[TrialRecord]:
        return sorted((r for (k, _), r in self.trials.items() if k == index),
                      key=lambda r: r.index)


class Journal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def reset(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def append(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, **_jsonable(data)}, allow_nan=True)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def replay(self) -> JournalState:
        state = JournalState()
        if not self.path.exists():
            return state
        for line in self.path.read_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: the rest is unwritten
                break
            _apply(state, item)
        return state


def _apply(state: JournalState, item: dict[str, Any]) -> None:
    kind = item.pop("event")
    if kind == "study":
        state.fingerprint, state.study_run_id = item["fingerprint"], item["study_run_id"]
    elif kind == "sanity":
        state.sanity_done = True
    elif kind == "round_start":
        state.rounds[item["round"]] = RoundState(index=item["round"], run_id=item["run_id"],
                                                 ranges=item["ranges"])
    elif kind == "round_end":
        r = state.rounds[item["round"]]
        r.done, r.next_ranges = True, item.get("next_ranges")
        r.stopped_early = bool(item.get("stopped_early"))
    elif kind == "round_resume":
        state.rounds[item["round"]].resumes += 1
    elif kind == "trial_rekey":  # an interrupted trial runs again under a new Tune trial id
        record = state.trials.pop((item["round"], item["old"]), None)
        if record is not None:
            record.trial_id = item["new"]
            state.trials[(item["round"], item["new"])] = record
    elif kind == "trial_drop":  # an interrupted pack member, run again as a new trial
        state.trials.pop((item["round"], item["trial_id"]), None)
    elif kind in ("trial_start", "trial_end"):
        record = TrialRecord.from_json(item["record"])
        state.trials[(record.round, record.trial_id)] = record
    elif kind == "study_end":
        state.finished = True


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
