"""The study being run: what every step of ``hpo search`` needs, passed as one object."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hpo.config.spec import Spec
from hpo.tracking.journal import Journal, JournalState
from hpo.tracking.store import Tracker
from hpo.trial.direction import Direction
from hpo.trial.record import TrialRecord, ranked

__all__ = ["Study", "study_dir_for"]


def study_dir_for(spec: Spec, root: str | Path = "hpo_runs") -> Path:
    return Path(root) / spec.name


@dataclass
class Study:
    """One study's validated file, its MLflow store and run, its journal and folder.

    ``run_id`` is the study's MLflow run (set once it is started or found again on resume);
    ``past`` is the journal of the interrupted study that ``--resume`` goes on from;
    ``open_round`` the round run a stop must end (KILLED or FAILED), not leave RUNNING.
    """

    spec: Spec
    tracker: Tracker
    journal: Journal
    folder: Path
    quiet: bool = False
    run_id: str = ""
    past: JournalState | None = None
    open_round: str | None = None  # the MLflow run of the round under way, until it ends

    @property
    def metric(self) -> str:
        return self.spec.search.metric

    @property
    def direction(self) -> Direction:
        return self.spec.search.resolved_mode

    def say(self, text: str = "") -> None:
        """Print for the user (stdout), unless --quiet."""
        if not self.quiet:
            print(text, flush=True)

    def ranked(self, records: Iterable[TrialRecord]) -> list[TrialRecord]:
        """The trials that count, best first."""
        return ranked(records, metric=self.metric, mode=self.direction)

    def best(self, records: Iterable[TrialRecord]) -> TrialRecord | None:
        best = self.ranked(records)[:1]
        return best[0] if best else None
