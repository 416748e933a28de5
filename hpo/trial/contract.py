"""The trial contract: ``fit(config, trial)`` trains one configuration and reports its epochs.

Every trial hpo runs goes through this one contract: hpo's built-in loop (``hpo.trial.builtin``)
and a user's ``trainable: "module:fit"`` alike. ``config`` is the flat union of the study's
resolved ``model:`` and ``train:`` values; ``trial`` is a ``Trial``: it takes each epoch's
metrics (``trial.report(epoch=k, **metrics)``) and says what the trial runs with (seed, device,
its number in the round, a folder for checkpoints, the study's data where hpo loaded it).

A report must hold ``search.metric`` (a ``TrialContractError`` fails the trial otherwise).
What a report does for the study: its metrics go to the searcher, the scheduler (ASHA may stop
the trial at a report: ``report`` then raises ``TrialStopped``, which ends the function), the
MLflow run and the journal. A non-finite loss ends the trial as diverged, as hpo's own loop
does; a ``val_X`` metric with its ``train_X`` gives the train/val ``gap`` when the report has
none.

Outside hpo, ``fit(config, Trial.local())`` runs the same function and prints its reports.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpo.errors import TrialContractError
from hpo.trial.direction import Direction
from hpo.trial.metrics import DIVERGED_KEY, EPOCH_KEY, METRICS

__all__ = ["Fit", "Trial", "TrialStopped"]

#: ``fit(config, trial)``: what every trial runs.
Fit = Callable[[dict[str, Any], "Trial"], Any]


class TrialStopped(Exception):  # noqa: N818 - a signal, not an error: the trial ends here
    """Raised by ``Trial.report`` when the trial must end: its loss diverged, or the scheduler
    stopped it. ``fit`` need not catch it; hpo does."""


class Trial:
    """The handle a trial's ``fit`` gets. Read ``seed``, ``device``, ``number``,
    ``checkpoint_dir`` and ``data``; call ``report(epoch=k, **metrics)`` once per epoch."""

    def __init__(self, *, send: Callable[[dict[str, Any]], Any], seed: int = 0,
                 device: Any = "cpu", number: int | None = None,
                 checkpoint_dir: str | Path | None = None, data: Any = None,
                 metric: str | None = None, direction: Direction | None = None) -> None:
        self.seed = seed  # seed torch, numpy, your sampler with it: same seed, same trial
        self.device = device  # a torch.device (or its name): where the trial trains
        self.number = number  # the trial's number in its round (1-based), where Ray says
        self._checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.data = data  # the study's data (hpo.data.Dataset) when it has a data: section
        self.metric = metric  # search.metric: what the study ranks trials by
        self.direction = direction or (METRICS.get(metric or "") or Direction.MAX)
        self._send = send
        self.reports: list[dict[str, Any]] = []
        self.diverged = False

    @classmethod
    def local(cls, *, seed: int = 0, device: Any = "cpu", metric: str | None = None,
              checkpoint_dir: str | Path | None = None, data: Any = None,
              out: Any = None) -> Trial:
        """A trial outside hpo: each report is printed (to ``out``, default stderr)."""
        def show(metrics: dict[str, Any]) -> None:
            print("  ".join(f"{k} {_short(v)}" for k, v in metrics.items()),
                  file=out or sys.stderr, flush=True)

        return cls(send=show, seed=seed, device=device, number=1,
                   checkpoint_dir=checkpoint_dir, data=data, metric=metric)

    @property
    def checkpoint_dir(self) -> Path | None:
        """A folder of this trial's own (made on first use), the same when the trial runs
        again after an interruption (``--resume``): save there, and load what is there."""
        if self._checkpoint_dir is not None:
            self._checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return self._checkpoint_dir

    def report(self, epoch: int | None = None, **metrics: Any) -> None:
        """One epoch's metrics (numbers; free names). ``epoch`` counts from 1; by default the
        next one. Raises ``TrialStopped`` when the trial must end here."""
        if self.diverged:
            raise TrialStopped("the trial diverged at an earlier report")
        epoch = len(self.reports) + 1 if epoch is None else int(epoch)
        values = {k: _number(k, v) for k, v in metrics.items()}
        if self.metric is not None and self.metric not in values:
            # the searcher and the scheduler rank trials by it: a report without it is no use
            raise TrialContractError(
                f"trial.report(epoch={epoch}, ...) has no {self.metric!r} (search.metric); it "
                f"reported {', '.join(values) or 'no metric'}")
        if "gap" not in values:
            values.update(self._gap(values))
        report = {EPOCH_KEY: epoch, **values}
        if any(not math.isfinite(v) for k, v in values.items() if "loss" in k):
            # the notes' "the loss explodes": hpo's loop reports the same and stops the trial
            report[DIVERGED_KEY], self.diverged = 1.0, True
        self.reports.append(report)
        self._send(report)
        if self.diverged:
            raise TrialStopped(f"a non-finite loss at epoch {epoch}: the trial diverged")

    def _gap(self, values: Mapping[str, float]) -> dict[str, float]:
        """``train_X - val_X`` for the study's ``val_X`` metric, signed so that a positive gap
        means training scores better than validation (overfitting)."""
        metric = self.metric or ""
        twin = "train_" + metric[len("val_"):] if metric.startswith("val_") else None
        if twin is None or twin not in values or metric not in values:
            return {}
        return {"gap": self.direction.sign * (values[twin] - values[metric])}

    def reported(self, key: str) -> bool:
        return any(key in r for r in self.reports)


def _number(key: str, value: Any) -> float:
    try:
        return float(value)  # numbers, 0-dim tensors and numpy scalars alike
    except (TypeError, ValueError):
        raise TypeError(f"trial.report: metric {key!r} must be a number, got "
                        f"{type(value).__name__} {value!r:.80}") from None


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
