"""The study folder's journal: what ``--resume`` reads.

Append-only JSON lines, one per event (study start, sanity, round start/end, trial start/end),
each flushed and fsynced, so a driver killed at any instant leaves a readable prefix and an
event costs O(1) however long the study is. ``replay`` folds the lines into the study's state.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.trial.record import TrialRecord, jsonable

__all__ = ["Journal", "JournalState", "RoundState"]


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
        line = json.dumps({"event": event, **jsonable(data)}, allow_nan=True)
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
