"""Many finished trials' MLflow runs in one transaction: the rows MLflow itself would write.

Today a trial costs the driver four MLflow calls and several sqlite commits (``Tracker``:
``create_run``, ``log_batch`` of its params, ``log_batch`` of every epoch's metrics and its end
tags, ``set_terminated``): 25-35 ms a trial. ``BulkRuns.write`` writes a whole batch of ended
trials in one transaction on MLflow's own SQLAlchemy store (its engine and session), one
``executemany`` per table of MLflow's ORM models: each trial is still its own run, with the
rows those four calls would leave (``runs``, ``tags``, ``params``, ``metrics``,
``latest_metrics``), computed the way
``mlflow.store.tracking.sqlalchemy_store.SqlAlchemyStore`` of MLflow ``MLFLOW_VERSION`` computes
them (``create_run``, ``log_batch``, ``update_run_info``). ``tests/tracking/test_bulk.py``
holds the two ways against each other, row by row and through the client and the UI's REST API.
The rows go in as tuples through the database driver: SQLAlchemy's per-row work (ORM bulk
insert) cost more than sqlite itself. What is left is mostly sqlite's: a trial is ~120 rows,
and each metrics row goes into the table and three indexes and checks a foreign key, ~8 µs of
CPU a row on this 2-core machine in plain sqlite3 (``benchmarks/results/bulk_writes.md``). Run
ids in time order (``new_run_id``) keep the run-id indexes appending at their end.

Those internals are not MLflow's public API, so the bulk path refuses any other MLflow version
(``BulkVersionError``). A store that is no local sqlite file (an MLflow server, PostgreSQL)
gets the same ``write`` as one-by-one client calls.

A run's id can be chosen before it is written (``new_run_id``), and ``write`` skips runs whose
id is already in the store: the journal can name a trial's run before the write, and a driver
killed mid-write writes the missing runs again on ``--resume`` without duplicating any.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hpo.errors import RunError

__all__ = ["MLFLOW_VERSION", "BulkRuns", "BulkVersionError", "TrialRun", "metric_history",
           "new_run_id"]

#: The MLflow version whose SqlAlchemyStore the rows below copy (the one requirements.lock pins).
MLFLOW_VERSION = "3.17.2"

_RUN_NAME = "mlflow.runName"  # mlflow.utils.mlflow_tags.MLFLOW_RUN_NAME
_PARENT = "mlflow.parentRunId"  # MLFLOW_PARENT_RUN_ID
_USER = "mlflow.user"  # MLFLOW_USER
_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")  # RunStatus
_MAX_METRICS_PER_CALL = 1000  # MLflow's log_batch limit, for the one-by-one path
_IN_CHUNK = 500  # ids per "IN (...)" of the existing-runs query


class BulkVersionError(RunError):
    """The installed MLflow is not the one the bulk path was written for."""


def new_run_id() -> str:
    """A run id to name a run before it is written: a UUID of version 7 (RFC 9562) as 32 hex
    digits, the form of MLflow's own ids (``uuid.uuid4().hex``), but in time order.

    Why not MLflow's random ids: each table a run writes indexes its rows by run id, so a
    random id puts every new run's rows at a random place in those B-trees, and ids in time
    order append them at the end. On benchmarks/bulk_writes.py's workload the bulk writer
    recorded 1.2x the trials a second of random ids in transactions of 64 trials, 1.1x in
    transactions of 256 (``benchmarks/results/bulk_writes.md``).
    """
    # 48 bits of Unix milliseconds, the version, 12 random bits, the variant, 62 random bits
    millis = (time.time_ns() // 1_000_000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((millis << 80) | (0x7 << 76) | ((rand >> 68) << 64) | (0b10 << 62)
             | (rand & ((1 << 62) - 1)))
    return f"{value:032x}"


def metric_history(epochs: Iterable[tuple[int, int, Mapping[str, Any]]],
                   ) -> list[tuple[str, float, int, int]]:
    """``TrialRun.metrics`` from a trial's epochs, each (step, time in ms, metrics): what
    ``Tracker.buffer_metrics`` keeps of them (finite numbers; no bools)."""
    return [(key, float(value), step, timestamp) for step, timestamp, metrics in epochs
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)]


@dataclass(frozen=True, kw_only=True)
class TrialRun:
    """One ended trial's run, as ``Tracker`` would write it over the trial's life.

    ``tags`` are the run's tags at its start (``create_run``; ``mlflow.runName`` and
    ``mlflow.parentRunId`` are added as the client adds them), ``end_tags`` those logged with
    the metrics at its end (``log_batch``), which override them (e.g. ``hpo.status``). Times are
    milliseconds since the epoch. ``run_id``: chosen beforehand (``new_run_id``), else new.
    """

    name: str
    start_time: int
    end_time: int
    status: str = "FINISHED"  # an ended RunStatus: FINISHED, FAILED or KILLED
    parent_run_id: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # values as Tracker.start_run takes
    #: (key, value, step, timestamp in ms) of every epoch, as ``Tracker.buffer_metrics`` holds
    metrics: Sequence[tuple[str, float, int, int]] = ()
    tags: Mapping[str, Any] = field(default_factory=dict)
    end_tags: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append(f"`name` must be a non-empty run name, but got {self.name!r}")
        if self.status not in _STATUSES:
            problems.append(f"`status` must be one of {', '.join(_STATUSES)}, but got "
                            f"{self.status!r}")
        if _RUN_NAME in self.end_tags:
            problems.append(f"`end_tags` must not rename the run ({_RUN_NAME}); give `name`")
        if self.tags.get(_RUN_NAME, self.name) != self.name:
            problems.append(f"`tags` name the run {self.tags[_RUN_NAME]!r}, `name` "
                            f"{self.name!r}: MLflow refuses both")
        if self.run_id is not None and not (len(self.run_id) == 32 and _is_hex(self.run_id)):
            problems.append(f"`run_id` must be 32 hex digits (new_run_id()), but got "
                            f"{self.run_id!r}")
        if problems:
            raise ValueError(f"TrialRun {self.name!r}: " + "; ".join(problems))


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


class BulkRuns:
    """Writes ended trials' runs into experiment ``experiment_id`` of the store ``uri``.

    On a ``sqlite:`` store, one transaction per ``write``; elsewhere (``bulk`` is False) the
    client calls ``Tracker`` makes, per run. Raises BulkVersionError on an MLflow other than
    ``MLFLOW_VERSION`` (a sqlite store only: the client calls work on any version).
    """

    def __init__(self, uri: str, experiment_id: str) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient
        from mlflow.tracking._tracking_service.utils import _get_store

        from hpo.tracking.store import store_creation

        self.uri, self.experiment_id = uri, str(experiment_id)
        with store_creation(uri):
            self.client = MlflowClient(tracking_uri=uri)
        self.bulk = uri.startswith("sqlite:")
        if not self.bulk:
            return
        if mlflow.__version__ != MLFLOW_VERSION:
            raise BulkVersionError(
                f"hpo's bulk MLflow writer (hpo/tracking/bulk.py) was written for MLflow "
                f"{MLFLOW_VERSION}: it writes the rows of MLflow's SqlAlchemyStore itself, and "
                f"this is MLflow {mlflow.__version__}. Install mlflow=={MLFLOW_VERSION} (as "
                f"requirements.lock pins it), or check bulk.py against this version's "
                f"mlflow/store/tracking/sqlalchemy_store.py (create_run, log_batch, "
                f"update_run_info), run tests/tracking/test_bulk.py and raise MLFLOW_VERSION")
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = _get_store(uri)  # the client's own store object: one engine for the file
        if type(store) is not SqlAlchemyStore:  # e.g. MLflow's workspaces: rows of their own
            self.bulk = False
            return
        self.store = store

    # -- the public surface -------------------------------------------------------------------
    def write(self, trials: Sequence[TrialRun], *,
              before_commit: Callable[[], None] | None = None) -> list[str]:
        """Write each trial's run (one transaction on sqlite); their run ids, in order.

        A trial whose ``run_id`` is already in the store is left as it is (written before a
        crash): its id is returned all the same. ``before_commit`` is called inside the
        transaction once every row is in (a test's crash point); an exception from it rolls
        the whole batch back. The one-by-one path calls it before its first write.
        """
        if not trials:
            return []
        if self.bulk:
            return self._write_bulk(trials, before_commit)
        if before_commit is not None:
            before_commit()
        return [self._write_one(trial) for trial in trials]

    # -- one transaction ----------------------------------------------------------------------
    def _write_bulk(self, trials: Sequence[TrialRun],
                    before_commit: Callable[[], None] | None) -> list[str]:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
        from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun
        from sqlalchemy import select

        ids = [t.run_id or new_run_id() for t in trials]
        rows = _Rows()
        with self.store.ManagedSessionMaker(read_only=False) as session:
            experiment = session.execute(
                select(SqlExperiment.artifact_location, SqlExperiment.lifecycle_stage)
                .where(SqlExperiment.experiment_id == int(self.experiment_id))).one_or_none()
            if experiment is None:
                raise MlflowException(f"No Experiment with id={self.experiment_id} exists",
                                      INVALID_PARAMETER_VALUE)
            if experiment.lifecycle_stage != "active":  # as create_run checks it
                raise MlflowException(
                    f"The experiment {self.experiment_id} must be in the 'active' state. "
                    f"Current state is {experiment.lifecycle_stage}.", INVALID_PARAMETER_VALUE)
            there = _existing(session, SqlRun, [t.run_id for t in trials if t.run_id])
            for trial, run_id in zip(trials, ids):
                if run_id not in there:
                    there.add(run_id)  # the same id twice in one batch: written once
                    rows.add(trial, run_id, int(self.experiment_id),
                             experiment.artifact_location)
            connection = session.connection()
            with _page_cache(connection.connection.driver_connection):
                for sql, table_rows in rows.inserts():
                    if table_rows:
                        # the driver's executemany: SQLAlchemy's per-row work took most of the time
                        connection.exec_driver_sql(sql, table_rows)
            if before_commit is not None:
                before_commit()
        return ids

    # -- a store without the bulk path: Tracker's calls ---------------------------------------
    def _write_one(self, trial: TrialRun) -> str:
        from mlflow.entities import Metric, Param, RunTag

        from hpo.tracking.store import _param_value

        if trial.run_id is not None:
            raise ValueError(f"TrialRun {trial.name!r}: a store without the bulk path "
                             f"({self.uri}) makes its own run ids; give run_id=None")
        tags = {str(k): str(v) for k, v in trial.tags.items()}
        if trial.parent_run_id:
            tags[_PARENT] = trial.parent_run_id
        run = self.client.create_run(self.experiment_id, start_time=trial.start_time,
                                     tags=tags, run_name=trial.name)
        run_id = run.info.run_id
        if trial.params:
            self.client.log_batch(run_id, params=[Param(k, _param_value(v))
                                                  for k, v in trial.params.items()])
        metrics = [Metric(k, v, ts, step) for k, v, step, ts in trial.metrics]
        end_tags = [RunTag(k, str(v)) for k, v in trial.end_tags.items()]
        for i in range(0, max(len(metrics), 1), _MAX_METRICS_PER_CALL):
            chunk = metrics[i:i + _MAX_METRICS_PER_CALL]
            if chunk or (end_tags and i == 0):
                self.client.log_batch(run_id, metrics=chunk, tags=end_tags if i == 0 else [])
        self.client.set_terminated(run_id, status=trial.status, end_time=trial.end_time)
        return run_id


#: The bulk transaction's sqlite page cache, KiB. A batch's metrics rows land all over the
#: metrics primary-key index ("key", timestamp, step, run_uuid, ...), which outgrows sqlite's
#: default 2 MB cache: sqlite then spilled dirty pages mid-transaction (a journal sync each time)
#: and read evicted pages back (py-spy: ~13% of a write's time in its cache spills). Measured on
#: benchmarks/bulk_writes.py's workload, paired runs on a shared 2-core machine: +4% alone, +9-17%
#: with ``is_nan`` as an int (below). The cache grows only as pages are used.
_CACHE_KIB = 65536


@contextmanager
def _page_cache(driver_connection: Any) -> Iterator[None]:
    """A larger page cache on the (pooled) connection while the rows go in, then its own again:
    cache_size is the connection's, not the file's, and MLflow's other calls use the pool."""
    before = driver_connection.execute("PRAGMA cache_size").fetchone()[0]
    driver_connection.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    try:
        yield
    finally:
        driver_connection.execute(f"PRAGMA cache_size={before}")


def _existing(session: Any, run_model: Any, ids: list[str]) -> set[str]:
    from sqlalchemy import select

    found: set[str] = set()
    for i in range(0, len(ids), _IN_CHUNK):
        found.update(session.scalars(select(run_model.run_uuid)
                                     .where(run_model.run_uuid.in_(ids[i:i + _IN_CHUNK]))))
    return found


#: The columns each insert fills, by MLflow's ORM model; a model with other columns (another
#: MLflow) is refused when the first batch is made, naming the table.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "SqlRun": ("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id",
               "status", "start_time", "end_time", "deleted_time", "source_version",
               "lifecycle_stage", "artifact_uri", "experiment_id"),
    "SqlTag": ("key", "value", "run_uuid"),
    "SqlParam": ("key", "value", "run_uuid"),
    "SqlMetric": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
    "SqlLatestMetric": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
}


def _insert_statements() -> list[str]:
    """``INSERT INTO <table> (<columns>) VALUES (?, ...)`` per model, in _COLUMNS' order (runs
    first: the other rows refer to them)."""
    from mlflow.store.tracking.dbmodels import models

    statements = []
    for model_name, columns in _COLUMNS.items():
        table = getattr(models, model_name).__table__
        if set(table.columns.keys()) != set(columns):
            raise BulkVersionError(
                f"MLflow's {model_name} ({table.name}) has the columns "
                f"{sorted(table.columns.keys())}, the bulk writer fills {sorted(columns)}: it "
                f"was written for MLflow {MLFLOW_VERSION}")
        statements.append(f"INSERT INTO {table.name} ({', '.join(columns)}) "
                          f"VALUES ({', '.join('?' * len(columns))})")
    return statements


class _Rows:
    """The rows of a batch's tables as tuples in _COLUMNS' order, as MLflow computes them."""

    _statements: list[str] | None = None

    def __init__(self) -> None:
        from mlflow.utils.validation import (
            _validate_metric,
            _validate_param,
            _validate_param_keys_unique,
            _validate_tag,
        )

        self.runs: list[tuple] = []
        self.tags: list[tuple] = []
        self.params: list[tuple] = []
        self.metrics: list[tuple] = []
        self.latest: list[tuple] = []
        self._validate_metric, self._validate_param = _validate_metric, _validate_param
        self._validate_tag, self._params_unique = _validate_tag, _validate_param_keys_unique
        self._checked: set[str] = set()  # metric keys seen valid

    def inserts(self) -> list[tuple[str, list[tuple]]]:
        if _Rows._statements is None:
            _Rows._statements = _insert_statements()
        return list(zip(_Rows._statements, (self.runs, self.tags, self.params, self.metrics,
                                            self.latest)))

    def add(self, trial: TrialRun, run_id: str, experiment_id: int,
            artifact_location: str) -> None:
        from mlflow.entities import Param
        from mlflow.utils.uri import append_to_uri_path

        from hpo.tracking.store import _param_value

        # create_run (MlflowClient -> SqlAlchemyStore): the run, RUNNING, with its start tags
        tags = {str(k): str(v) for k, v in trial.tags.items()}
        if trial.parent_run_id:
            tags[_PARENT] = trial.parent_run_id
        user_id = tags.get(_USER, "unknown")
        tags.setdefault(_RUN_NAME, trial.name)
        # log_batch: params (checked, cut to MLflow's length), then metrics, then the end tags
        params = [self._validate_param(k, _param_value(v), path=f"params[{i}]")
                  for i, (k, v) in enumerate(trial.params.items())]
        self._params_unique([Param(p.key, p.value) for p in params])
        for i, (key, value) in enumerate(trial.end_tags.items()):
            tag = self._validate_tag(key, str(value), path=f"tags[{i}]")
            tags[tag.key] = tag.value
        # update_run_info (set_terminated): the end time and status
        self.runs.append((
            run_id, trial.name, "UNKNOWN", "", "", user_id, trial.status, trial.start_time,
            trial.end_time, None, "", "active",
            append_to_uri_path(artifact_location, run_id, "artifacts"), experiment_id))
        self.tags.extend((k, v, run_id) for k, v in tags.items())
        self.params.extend((p.key, p.value, run_id) for p in params)
        self._add_metrics(trial, run_id)

    def _add_metrics(self, trial: TrialRun, run_id: str) -> None:
        """SqlAlchemyStore._log_metrics_once: one row per distinct (key, timestamp, step, value,
        is_nan), NaN as 0 with is_nan, infinities as +-max float; latest_metrics: per key, the
        metric with the greatest (step, timestamp, value), the first of equals."""
        seen: set[tuple[str, float, int, int, bool]] = set()
        latest: dict[str, tuple[str, float, int, int, bool, str]] = {}
        checked, isnan, isinf = self._checked, math.isnan, math.isinf
        for i, (key, value, step, timestamp) in enumerate(trial.metrics):
            value = float(value)  # as the client's convert_metric_value_to_float_if_possible
            if key not in checked or type(step) is not int or type(timestamp) is not int \
                    or timestamp < 0:
                self._validate_metric(key, value, timestamp, step, path=f"metrics[{i}]")
                checked.add(key)
            is_nan = isnan(value)
            if is_nan:
                value = 0.0
            elif isinf(value):
                value = 1.7976931348623157e308 if value > 0 else -1.7976931348623157e308
            # is_nan as 0/1, as sqlite stores a bool: the driver binds an int directly, a bool
            # only after a failed adapter lookup (~5% of a write's time in py-spy; +5% trials/s)
            row = (key, value, timestamp, step, int(is_nan), run_id)
            if row in seen:
                continue
            seen.add(row)
            self.metrics.append(row)
            best = latest.get(key)
            if best is None or (step, timestamp, value) > (best[3], best[2], best[1]):
                latest[key] = row
        self.latest.extend(latest.values())
