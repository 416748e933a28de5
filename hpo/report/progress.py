"""A round's progress line on stderr."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Collection

from hpo.trial.direction import Direction
from hpo.trial.record import TrialRecord, ranked
from hpo.trial.status import TrialStatus

__all__ = ["PROGRESS_INTERVAL_S", "ProgressLine"]

#: On a terminal, the progress line is redrawn at most this often (seconds).
PROGRESS_INTERVAL_S = 0.2
BAR_WIDTH = 24


class ProgressLine:
    """``round 2/3 [#####...] 9/16 trials, best val_accuracy 0.9778``: on a terminal redrawn at
    most every PROGRESS_INTERVAL_S (and when the round's last trial ends), else printed at each
    quarter of the round. Ranking the round's trials for its best is what costs; it happens
    only for a line that is printed, so a round of thousands of short trials does not rank them
    per trial."""

    def __init__(self, *, round_index: int, rounds: int, total: int, metric: str,
                 direction: Direction, quiet: bool = False) -> None:
        self.round, self.rounds, self.total = round_index, rounds, total
        self.metric, self.direction, self.quiet = metric, direction, quiet
        self.tty = sys.stderr.isatty()
        self._milestone = 0
        self._shown = -math.inf  # when the terminal's line was last drawn

    def __call__(self, records: Collection[TrialRecord]) -> None:
        if self.quiet:
            return
        done = sum(1 for r in records if r.status is not TrialStatus.RUNNING)
        if not self._due(done):
            return
        best = ranked(records, metric=self.metric, mode=self.direction)[:1]
        best_text = (f"best {self.metric} {best[0].metric(self.metric):.4f}" if best
                     else "no result yet")
        filled = int(BAR_WIDTH * done / max(self.total, 1))
        line = (f"round {self.round}/{self.rounds} "
                f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{self.total} trials, "
                f"{best_text}")
        if self.tty:
            print(f"\r{line}", end="\n" if done >= self.total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def _due(self, done: int) -> bool:
        if self.tty:
            now = time.monotonic()
            if done < self.total and now - self._shown < PROGRESS_INTERVAL_S:
                return False
            self._shown = now
            return True
        step = max(1, self.total // 4)
        if done < self.total and done // step <= self._milestone:
            return False
        self._milestone = done // step
        return True
