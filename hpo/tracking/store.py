"""MLflow: the run tree (study -> round -> trial), batched logging from the driver, artifacts.

Trials never talk to MLflow: a Ray Tune callback hands their results to ``Tracker`` (from a
writer thread of its own), which writes them with ``log_batch``: a trial's start is a new run and
its parameters, its end one batch of every epoch's metrics and its tags, then its status. So
tracking costs four writes per trial, not per epoch, and Tune's loop never waits for them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.errors import TrackingUnreachable

__all__ = ["Tracker", "resolve_tracking_uri", "ui_command"]

DEFAULT_URI = "sqlite:///mlflow.db"
_MAX_PARAM_LEN = 6000


def resolve_tracking_uri(cli_uri: str | None, spec_uri: str | None) -> str:
    """--tracking-uri, then the study file's tracking.uri, then MLFLOW_TRACKING_URI, then sqlite."""
    return cli_uri or spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def _param_value(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)[:_MAX_PARAM_LEN]


@dataclass
class _Buffer:
    """Metrics of one trial waiting for the next flush: (key, value, step, timestamp)."""

    items: list[tuple[str, float, int, int]] = field(default_factory=list)


class Tracker:
    """Everything the study writes to MLflow goes through here (driver process only)."""

    def __init__(self, uri: str, experiment: str) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # with an http store MLflow prints "View run ... at ..." per ended run; --quiet is quiet
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)

        self.uri = uri
        self.experiment_name = experiment
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id: str | None = None
        self._buffers: dict[str, _Buffer] = {}

    # -- set-up -------------------------------------------------------------------------------
    def check(self) -> None:
        """Reach the store before any trial runs; an unreachable server is a RunError."""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot track"
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise TrackingUnreachable(
                f"cannot reach the MLflow tracking store {self.uri!r}: {reason}\n"
                f"start the server, or pass --tracking-uri (default: {DEFAULT_URI})"
            ) from None

    def ensure_experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            self.experiment_id = self.client.create_experiment(self.experiment_name)
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        return self.experiment_id

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, name: str, *, parent: str | None = None,
                  tags: Mapping[str, str] | None = None,
                  params: Mapping[str, Any] | None = None) -> str:
        from mlflow.entities import Param

        if self.experiment_id is None:
            self.ensure_experiment()
        all_tags = dict(tags or {})
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        if params:
            self.client.log_batch(run_id, params=[Param(k, _param_value(v))
                                                  for k, v in params.items()])
        return run_id

    def buffer_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        now = int(time.time() * 1000)
        buf = self._buffers.setdefault(run_id, _Buffer())
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
                    value):
                buf.items.append((key, float(value), step, now))

    def flush(self, run_id: str, tags: Mapping[str, Any] | None = None) -> None:
        """Write the run's buffered metrics (and ``tags``, in the same call)."""
        from mlflow.entities import Metric, RunTag

        buf = self._buffers.pop(run_id, None)
        metrics = [Metric(k, v, ts, step) for k, v, step, ts in (buf.items if buf else [])]
        run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        chunks = [metrics[i:i + 1000] for i in range(0, len(metrics), 1000)]  # MLflow's limit
        for i, chunk in enumerate(chunks or [[]]):
            if chunk or (run_tags and i == 0):
                self.client.log_batch(run_id, metrics=chunk, tags=run_tags if i == 0 else [])

    def discard(self, run_id: str) -> None:
        """Drop metrics not yet written (a retried trial starts its epochs over)."""
        self._buffers.pop(run_id, None)

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int = 0) -> None:
        self.buffer_metrics(run_id, metrics, step)
        self.flush(run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end_run(self, run_id: str, status: str = "FINISHED",
                tags: Mapping[str, Any] | None = None) -> None:
        self.flush(run_id, tags)
        self.client.set_terminated(run_id, status=status)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        self.client.log_figure(run_id, figure, name)
