"""One trial of a study as the driver sees it: what the journal, MLflow and the reports read."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from hpo.trial.direction import Direction
from hpo.trial.status import TrialStatus

__all__ = ["TrialRecord", "jsonable", "ranked"]


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
    status: TrialStatus = TrialStatus.RUNNING
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
        value = self.last.get(key)
        return float(value) if value is not None and math.isfinite(value) else None

    @property
    def finished(self) -> bool:
        return self.status.finished

    def to_json(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialRecord:
        record = cls(**data)
        record.status = TrialStatus(record.status)
        record.params = {k: tuple(v) if isinstance(v, list) else v
                         for k, v in record.params.items()}
        record.sampled = {k: tuple(v) if isinstance(v, list) else v
                          for k, v in record.sampled.items()}
        return record


def ranked(records: Iterable[TrialRecord], *, metric: str, mode: str) -> list[TrialRecord]:
    """The trials that count, best first: finished, not diverged, with a finite ``metric``."""
    done = [r for r in records if r.status.eligible and r.metric(metric) is not None]
    return Direction.of(mode).ranked(done, key=lambda r: r.metric(metric))


def jsonable(value: Any) -> Any:
    """Plain JSON data: tuples as lists, keys as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
