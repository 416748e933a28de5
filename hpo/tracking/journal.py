"""The study folder's journal: what ``--resume`` reads.

Append-only JSON lines, one per event (study start, sanity, round start/end, trial start/end),
each written with one ``write`` and fsynced, so a driver killed at any instant leaves a readable
prefix and an event costs O(1) however long the study is. ``replay`` folds the lines into the
study's state.

A kill or a full disk mid-write leaves a torn last line (a prefix of its event, without the
newline): replay drops it and cuts it off the file, and so does the first append of a journal
not replayed, so the next event starts on a line of its own. A bad line with lines after it is
no torn write but damage, and an input error naming the file and line: a study resumed from a
journal that silently stopped there would be a different study.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.errors import InputError
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
    #: (round, trial id) -> the MLflow step of each epoch in the ended trial's history
    steps: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    #: (round, trial id) -> when the ended trial started and ended and each epoch was
    #: reported (ms since the epoch): (start, end, [epoch times]); journaled by the bulk
    #: writer, which writes a trial's run only after its end is journaled
    times: dict[tuple[int, str], tuple[int, int, list[int]]] = field(default_factory=dict)
    interruptions: int = 0  # times a signal or an error stopped the study

    def round_records(self, index: int) -> list[TrialRecord]:
        return sorted((r for (k, _), r in self.trials.items() if k == index),
                      key=lambda r: r.index)


class Journal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # appends (the round writer's threads, several on a tracking server) and replay (the
        # driver) never see half a line, nor interleave two
        self._lock = threading.Lock()
        self._whole = False  # the file is known to end with a whole line: read or written here

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def reset(self) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"")
            self._whole = True

    def append(self, event: str, **data: Any) -> None:
        self.append_many([(event, data)])

    def append_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """``append`` of each (event, data), in order, with one write and one fsync: a kill
        mid-write leaves a prefix of them, the last one possibly torn."""
        if not events:
            return
        line = "".join(json.dumps({"event": event, **jsonable(data)}, allow_nan=True) + "\n"
                       for event, data in events).encode()
        with self._lock:
            if not self._whole:
                self._read()  # cuts off a torn last line, so this event starts a line
            # private, as its 0700 folder
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                self._whole = False  # until the whole line is on disk
                written = os.write(fd, line)  # one write: the line whole, or a torn last line
                while written < len(line):  # a regular file writes short only when disk is full
                    written += os.write(fd, line[written:])
                os.fsync(fd)
                self._whole = True
            except OSError as exc:  # os.write names no file: a full disk's message should
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
            finally:
                os.close(fd)

    def replay(self) -> JournalState:
        """The study's state from the journal; a torn last line is dropped and cut off the
        file. Raises InputError naming the file and line of damage elsewhere."""
        with self._lock:
            return self._read()

    def _read(self) -> JournalState:
        state = JournalState()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return state
        *lines, tail = data.split(b"\n")  # tail: bytes after the last newline, a torn write
        good = 0  # bytes of whole, good lines
        for number, raw in enumerate(lines, start=1):
            try:
                item = _event(raw)
            except ValueError as bad:
                if number == len(lines) and not tail:  # the last line: a torn write
                    break  # (a crash can leave zeros, newline included, where it was cut)
                raise InputError(self._damaged(number, str(bad))) from None
            kind = item["event"]
            try:
                _apply(state, item)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise InputError(self._damaged(
                    number, f"a {kind!r} event that does not fit the events "
                    f"before it ({type(exc).__name__}: {exc})",
                    last=number == len(lines) and not tail)) from None
            good += len(raw) + 1
        if good < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())
        self._whole = True
        return state

    def _damaged(self, number: int, why: str, *, last: bool = False) -> str:
        after = "" if last else ", with lines after it, so no write cut short by a kill"
        return (f"{self.path}:{number}: the study journal is damaged: {why}{after}. --resume "
                f"cannot go on from it: run without --resume to start the study again (this "
                f"overwrites the journal)")


def _event(raw: bytes) -> dict[str, Any]:
    """One line's event; ValueError saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                         f"{exc.start + 1})") from None
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}, column {exc.colno}") from None
    if not isinstance(item, dict) or not isinstance(item.get("event"), str):
        raise ValueError("not a journal event (a JSON object with an \"event\")")
    return item


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
        if "steps" in item:
            state.steps[(record.round, record.trial_id)] = list(item["steps"])
        if "times" in item:
            start, end, stamps = item["times"]
            state.times[(record.round, record.trial_id)] = (int(start), int(end),
                                                            [int(t) for t in stamps])
    elif kind == "interrupted":
        state.interruptions += 1
    elif kind == "study_end":
        state.finished = True
