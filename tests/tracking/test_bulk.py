"""``BulkRuns`` against ``Tracker``: one study written both ways, compared row by row.

The same 20 trials (10 epochs of the usual hpo metrics, some FAILED, one with an error longer
than MLflow keeps) go into one sqlite store through ``Tracker``'s one-by-one calls, as
``RoundWriter`` makes them, and into another through ``BulkRuns``. A fake clock gives both the
same times. The stores must then hold the same rows (run ids aside), read the same through
``MlflowClient``, and serve the same to the MLflow UI (its REST calls, on ``hpo ui``); the
one-by-one fallback of ``BulkRuns`` for an MLflow server must leave what ``Tracker`` leaves.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import types
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from tests.ui.conftest import hpo_ui

from hpo.tracking import store as store_module
from hpo.tracking.bulk import (
    MLFLOW_VERSION,
    BulkRuns,
    BulkVersionError,
    TrialRun,
    metric_history,
    new_run_id,
)
from hpo.tracking.store import Tracker

TRIALS, EPOCHS = 20, 10
KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "gap", "diverged",
        "update_ratio", "update_ratio.layer1", "update_ratio.layer2", "update_ratio.classifier")
T0 = 1_764_000_000_000  # ms
EXPERIMENT = "bulk-study"
#: Tags whose value is a run id, different in each store: compared as the run's name.
RUN_ID_TAGS = ("mlflow.parentRunId",)
#: Tables a trial's run writes; every other table must hold as many rows in both stores.
RUN_TABLES = ("runs", "tags", "params", "metrics", "latest_metrics")


@dataclass
class Spec:
    """One trial as the round sees it: what RoundWriter hands to Tracker, and when."""

    name: str
    params: dict[str, Any]
    tags: dict[str, str]
    epochs: list[tuple[int, int, dict[str, float]]]  # (step, time in ms, metrics)
    end_tags: dict[str, Any]
    status: str
    start: int
    end: int

    def trial_run(self, parent: str, run_id: str | None = None) -> TrialRun:
        metrics = metric_history(self.epochs)
        return TrialRun(name=self.name, start_time=self.start, end_time=self.end,
                        status=self.status, parent_run_id=parent, params=self.params,
                        metrics=metrics, tags=self.tags, end_tags=self.end_tags, run_id=run_id)


def study_specs() -> list[Spec]:
    rng = random.Random(20)
    specs = []
    for i in range(TRIALS):
        failed = i % 6 == 5
        start = T0 + 10_000 * i
        epochs = []
        for e in range(3 if failed else EPOCHS):
            acc = min(0.99, 0.5 + 0.05 * e + rng.random() * 0.01)
            metrics = {k: rng.random() for k in KEYS}
            metrics.update(train_accuracy=acc, val_accuracy=acc - 0.02, gap=0.02, diverged=0.0)
            if i == 3 and e == 4:  # what Tracker does not log: not a finite number
                metrics.update(val_loss=float("nan"), train_loss=float("inf"), lucky=True,
                               note="x")
            # two epochs in one millisecond (short trials do that), else 40 ms apart
            epochs.append((e, start + 40 * (e + 1) - (40 if e == 2 else 0), metrics))
        params = {"lr": 10 ** rng.uniform(-4, -1), "weight_decay": 10 ** rng.uniform(-6, -2),
                  "dropout": rng.uniform(0, 0.5), "activation": rng.choice(["relu", "tanh"]),
                  "init": "he", "batchnorm": rng.random() < 0.5, "hidden": (64, 32),
                  "epochs": EPOCHS, "batch_size": 64, "optimizer": "adam", "seed": i}
        if failed:
            error = "RuntimeError: CUDA out of memory " + ("x" * 9000 if i == 5 else "")
            end_tags: dict[str, Any] = {"hpo.status": "failed", "hpo.error": error}
        else:
            end_tags = {"hpo.status": "finished", "hpo.epochs": EPOCHS, "hpo.flags": "none"}
        end_tags.update({"hpo.node": "10.0.0.7", "hpo.attempts": 2 if failed else 1})
        specs.append(Spec(
            name=f"trial 1-{i:02d} lr={params['lr']:.1e}", params=params,
            tags={"hpo.round": "1", "hpo.trial": f"1-{i:02d}", "hpo.status": "running",
                  "hpo.kind": "trial"},
            epochs=epochs, end_tags=end_tags, status="FAILED" if failed else "FINISHED",
            start=start, end=epochs[-1][1] + 7))
    return specs


class Clock:
    """The milliseconds Tracker's buffer_metrics and MLflow's client read as "now"."""

    def __init__(self) -> None:
        self.ms = T0 - 1000

    def seconds(self) -> float:
        return (self.ms + 0.5) / 1000  # int(seconds * 1000) is self.ms, rounding aside

    def millis(self) -> int:
        return self.ms


@contextmanager
def clocked(clock: Clock) -> Iterator[None]:
    import mlflow.tracking._tracking_service.client as service

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_module, "time", types.SimpleNamespace(time=clock.seconds))
        mp.setattr(service, "get_current_time_millis", clock.millis)
        yield


def start_study(uri: str, clock: Clock, experiment: str = EXPERIMENT) -> tuple[Tracker, str]:
    """The study's experiment and its round run, through Tracker (both ways start so)."""
    tracker = Tracker(uri, experiment)
    tracker.ensure_experiment()
    clock.ms = T0 - 500
    round_run = tracker.start_run("round 1", tags={"hpo.kind": "round", "hpo.round": "1"})
    return tracker, round_run


def write_one_by_one(uri: str, specs: list[Spec]) -> None:
    """What RoundWriter makes Tracker do for each trial: start, epochs, end."""
    clock = Clock()
    with clocked(clock):
        tracker, round_run = start_study(uri, clock)
        for spec in specs:
            clock.ms = spec.start
            run_id = tracker.start_run(spec.name, parent=round_run, params=spec.params,
                                       tags=spec.tags)
            for step, ts, metrics in spec.epochs:
                clock.ms = ts
                tracker.buffer_metrics(run_id, metrics, step=step)
            clock.ms = spec.end
            tracker.end_run(run_id, spec.status, tags=spec.end_tags)
        clock.ms = T0 + 10_000 * TRIALS
        tracker.client.set_terminated(round_run)


def write_bulk(uri: str, specs: list[Spec], batch: int = 8) -> list[str]:
    clock = Clock()
    with clocked(clock):
        tracker, round_run = start_study(uri, clock)
        bulk = BulkRuns(uri, tracker.experiment_id)
        ids = []
        for i in range(0, len(specs), batch):
            ids += bulk.write([s.trial_run(round_run) for s in specs[i:i + batch]])
        clock.ms = T0 + 10_000 * TRIALS
        tracker.client.set_terminated(round_run)
    return ids


@pytest.fixture(scope="module")
def specs() -> list[Spec]:
    return study_specs()


@pytest.fixture(scope="module")
def stores(tmp_path_factory, specs) -> tuple[str, str]:
    """(one-by-one store, bulk store), both sqlite files."""
    folder = tmp_path_factory.mktemp("bulk")
    one, bulk = f"sqlite:///{folder / 'one.db'}", f"sqlite:///{folder / 'bulk.db'}"
    write_one_by_one(one, specs)
    write_bulk(bulk, specs)
    return one, bulk


# -- rows ---------------------------------------------------------------------------------------


def table_rows(uri: str) -> dict[str, list[tuple]]:
    """Every row a run wrote, run ids replaced by run names; row counts of the other tables."""
    db = sqlite3.connect(uri.removeprefix("sqlite:///"))
    try:
        names = dict(db.execute("SELECT run_uuid, name FROM runs"))
        out: dict[str, list[tuple]] = {}
        for table in RUN_TABLES:
            cursor = db.execute(f"SELECT * FROM {table}")
            columns = [c[0] for c in cursor.description]
            rows = []
            for row in cursor:
                cells = []
                for column, cell in zip(columns, row):
                    if isinstance(cell, str):
                        for run_id, name in names.items():
                            cell = cell.replace(run_id, f"<{name}>")
                    cells.append(cell)
                rows.append(tuple(cells))
            out[table] = sorted(rows, key=repr)
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            if table not in RUN_TABLES:
                count = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                out[f"count:{table}"] = [(count,)]
        return out
    finally:
        db.close()


def test_the_bulk_store_holds_the_rows_mlflow_writes(stores, specs):
    one, bulk = (table_rows(uri) for uri in stores)
    assert len(one["runs"]) == TRIALS + 1
    assert len(one["metrics"]) == sum(len(s.epochs) * len(KEYS) for s in specs) - 2
    for table in one:
        assert bulk[table] == one[table], table


def test_a_long_error_is_cut_as_mlflow_cuts_it(stores):
    for uri in stores:
        runs = MlflowClient(uri).search_runs(
            [MlflowClient(uri).get_experiment_by_name(EXPERIMENT).experiment_id],
            "tags.`hpo.trial` = '1-05'")
        assert 7000 < len(runs[0].data.tags["hpo.error"]) <= 8000


# -- MlflowClient -------------------------------------------------------------------------------


def client_view(uri: str, name: str = EXPERIMENT) -> dict[str, Any]:
    """What MlflowClient says of every run of the study ``name``, keyed by run name; run and
    experiment ids (different in each store, or each experiment) out of the artifact URI."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    names = {r.info.run_id: r.info.run_name for r in runs}
    view = {}
    for run in runs:
        info = run.info
        tags = {k: names.get(v, v) if k in RUN_ID_TAGS else v for k, v in run.data.tags.items()}
        view[info.run_name] = {
            "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
            "lifecycle_stage": info.lifecycle_stage, "user_id": info.user_id,
            "artifact_uri": info.artifact_uri.replace(info.run_id, "<id>").replace(
                f"/{info.experiment_id}/", "/<experiment>/"),
            "params": run.data.params, "metrics": run.data.metrics, "tags": tags,
            "history": {key: sorted((m.step, m.timestamp, m.value)
                                    for m in client.get_metric_history(info.run_id, key))
                        for key in run.data.metrics},
        }
    return view


def test_mlflow_client_reads_the_same_study(stores, specs):
    one, bulk = (client_view(uri) for uri in stores)
    assert sorted(one) == sorted(bulk) == sorted(["round 1", *(s.name for s in specs)])
    for name in one:
        assert bulk[name] == one[name], name
    failed = [s for s in specs if s.status == "FAILED"]
    assert failed and all(one[s.name]["status"] == "FAILED" for s in failed)
    trial = one[specs[0].name]
    assert trial["tags"]["mlflow.parentRunId"] == "round 1"
    assert trial["tags"]["hpo.status"] == "finished"
    assert [len(h) for h in trial["history"].values()] == [EPOCHS] * len(KEYS)
    assert len(one[specs[3].name]["history"]["val_loss"]) == EPOCHS - 1  # its NaN is not logged


# -- writing again, run ids, the version pin ------------------------------------------------------


def test_a_run_already_written_is_not_written_again(tmp_path, specs):
    """A resume after a kill mid-write hands the same trials (same run ids) again."""
    uri = f"sqlite:///{tmp_path / 'again.db'}"
    tracker = Tracker(uri, EXPERIMENT)
    bulk = BulkRuns(uri, tracker.ensure_experiment())
    ids = [new_run_id() for _ in specs]
    first = bulk.write([s.trial_run("", run_id) for s, run_id in zip(specs[:5], ids)])
    again = bulk.write([s.trial_run("", run_id) for s, run_id in zip(specs, ids)])
    assert first == ids[:5] and again == ids
    runs = tracker.client.search_runs([tracker.experiment_id], max_results=1000)
    assert sorted(r.info.run_id for r in runs) == sorted(ids)
    rows = table_rows(uri)
    assert len(rows["metrics"]) == sum(len(s.epochs) * len(KEYS) for s in specs) - 2


def test_run_ids_are_uuids_in_time_order():
    """Ids as MLflow's (32 hex digits of a UUID), but later ones sort after earlier ones: what
    keeps each table's run-id index appending at its end."""
    import time
    import uuid

    earlier = [new_run_id() for _ in range(1000)]
    time.sleep(0.002)  # the order is by millisecond: ids of one millisecond are in any order
    later = [new_run_id() for _ in range(1000)]
    assert len(set(earlier + later)) == 2000
    assert max(earlier) < min(later)
    for run_id in (earlier[0], later[-1]):
        assert len(run_id) == 32 and uuid.UUID(run_id).hex == run_id
        assert uuid.UUID(run_id).version == 7 and uuid.UUID(run_id).variant == uuid.RFC_4122
    created = int(later[-1][:12], 16)  # its first 48 bits: Unix milliseconds
    assert abs(created - time.time() * 1000) < 60_000


def test_a_trial_run_checks_itself():
    with pytest.raises(ValueError, match="`status` must be one of .* but got 'DONE'"):
        TrialRun(name="t", start_time=0, end_time=1, status="DONE")
    with pytest.raises(ValueError, match="`run_id` must be 32 hex digits"):
        TrialRun(name="t", start_time=0, end_time=1, run_id="abc")


def test_the_bulk_path_was_written_for_the_installed_mlflow(tmp_path):
    """Fails by name when MLflow is upgraded: bulk.py copies MLflow's own rows."""
    import mlflow

    assert mlflow.__version__ == MLFLOW_VERSION, (
        f"hpo.tracking.bulk was written for MLflow {MLFLOW_VERSION}, this is "
        f"{mlflow.__version__}: check it against this MLflow's SqlAlchemyStore, then raise "
        f"MLFLOW_VERSION")
    uri = f"sqlite:///{tmp_path / 'pin.db'}"
    assert BulkRuns(uri, Tracker(uri, EXPERIMENT).ensure_experiment()).bulk


def test_another_mlflow_version_is_refused_by_name(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'other.db'}"
    experiment_id = Tracker(uri, EXPERIMENT).ensure_experiment()
    monkeypatch.setattr(mlflow, "__version__", "3.18.0")
    with pytest.raises(BulkVersionError, match=r"written for MLflow 3\.17\.2.*this is MLflow "
                                               r"3\.18\.0\. Install mlflow==3\.17\.2"):
        BulkRuns(uri, experiment_id)


# -- the UI's REST API, and the fallback for a server --------------------------------------------


def rest(base: str, path: str, body: dict | None = None, **query: Any) -> dict:
    url = f"{base}/ajax-api/2.0/mlflow/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query, doseq=True)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def ui_view(base: str) -> dict[str, Any]:
    """What the UI's runs table and charts fetch: runs/search, then each metric's history for
    the runs (get-history-bulk-interval, as the charts ask for it), keyed by run name."""
    experiment = rest(base, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    runs = rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                      "max_results": 1000, "run_view_type": "ACTIVE_ONLY"})["runs"]
    names = {r["info"]["run_id"]: r["info"]["run_name"] for r in runs}

    def plain(run: dict) -> dict:
        info = {k: v for k, v in run["info"].items() if k not in ("run_id", "run_uuid",
                                                                    "experiment_id")}
        info["artifact_uri"] = info["artifact_uri"].replace(run["info"]["run_id"], "<id>")
        data = run["data"]
        tags = {t["key"]: names.get(t["value"], t["value"]) if t["key"] in RUN_ID_TAGS
                else t["value"] for t in data.get("tags", [])}
        return {"info": info, "tags": tags,
                "params": sorted((p["key"], p["value"]) for p in data.get("params", [])),
                "metrics": sorted((m["key"], m["value"], m["step"], m["timestamp"])
                                  for m in data.get("metrics", []))}

    view = {names[r["info"]["run_id"]]: plain(r) for r in runs}
    trial_ids = [r["info"]["run_id"] for r in runs if r["info"]["run_name"] != "round 1"]
    for key in KEYS:
        found = rest(base, "metrics/get-history-bulk-interval", run_ids=trial_ids,
                     metric_key=key, max_results=320).get("metrics", [])
        for m in found:
            view[names[m["run_id"]]].setdefault("history", {}).setdefault(key, []).append(
                (m["step"], m["timestamp"], m["value"]))
    for run in view.values():
        for points in run.get("history", {}).values():
            points.sort()
    return view


@pytest.mark.slow
def test_the_ui_rest_api_serves_the_same_study(stores, tmp_path):
    one_uri, bulk_uri = stores
    with hpo_ui(one_uri, cwd=tmp_path) as one_base, hpo_ui(bulk_uri, cwd=tmp_path) as bulk_base:
        one, bulk = ui_view(one_base), ui_view(bulk_base)
        empty = tmp_path / "server"
        empty.mkdir()
        with hpo_ui(f"sqlite:///{empty / 'mlflow.db'}", cwd=empty) as server:
            write_bulk(server, study_specs())  # BulkRuns on a server: the client's calls
            over_http = ui_view(server)
    assert len(one) == TRIALS + 1
    assert all(len(run["history"]) == len(KEYS) for name, run in one.items()
               if name != "round 1")
    assert bulk == one
    for name, run in over_http.items():  # the server's experiment keeps its artifacts elsewhere
        run["info"].pop("artifact_uri")
        one[name]["info"].pop("artifact_uri")
        assert run == one[name], name


def test_odd_metrics_make_the_rows_log_batch_makes(tmp_path):
    """NaN, infinities, a repeated point, steps out of order, one step twice: the rows of
    MlflowClient.log_batch on one run, those of BulkRuns on another, in one store."""
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'odd.db'}"
    tracker = Tracker(uri, EXPERIMENT)
    experiment_id = tracker.ensure_experiment()
    nan, inf = float("nan"), float("inf")
    points = [("a", 1.0, 5, T0 + 5), ("a", 2.0, 3, T0 + 9), ("a", 1.0, 5, T0 + 5),
              ("b", nan, 0, T0), ("b", inf, 1, T0 + 1), ("b", -inf, 2, T0 + 2),
              ("c", 0.5, 7, T0 + 3), ("c", 0.25, 7, T0 + 4), ("c", 0.75, 7, T0 + 4),
              ("d", nan, 4, T0), ("d", 0.0, 4, T0)]
    client = tracker.client
    run = client.create_run(experiment_id, start_time=T0, run_name="client")
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, ts, s) for k, v, s, ts in points])
    client.set_terminated(run.info.run_id, end_time=T0 + 10)
    BulkRuns(uri, experiment_id).write([TrialRun(name="bulk", start_time=T0, end_time=T0 + 10,
                                                 metrics=points)])
    rows = table_rows(uri)
    for table in ("metrics", "latest_metrics", "runs", "tags"):
        mine = [r for r in rows[table] if "<bulk>" in r]
        theirs = [tuple(c.replace("client", "bulk") if isinstance(c, str) else c for c in r)
                  for r in rows[table] if "<client>" in r]
        assert sorted(mine, key=repr) == sorted(theirs, key=repr), table
    assert len([r for r in rows["metrics"] if "<bulk>" in r]) == len(points) - 1


KILLED_WRITER = """
import json, os, signal, sys
sys.path.insert(0, {root!r})
from tests.tracking.test_bulk import study_specs
from hpo.tracking.bulk import BulkRuns
from tests.fixtures.tracker_env import tracker_env  # noqa: F401 - autouse
uri, experiment_id, ids, kill_at = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
specs = study_specs()
bulk = BulkRuns(uri, experiment_id)
bulk.write([s.trial_run("", i) for s, i in zip(specs[:4], ids[:4])])  # one batch committed
kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
bulk.write([s.trial_run("", i) for s, i in zip(specs[4:], ids[4:])],
           before_commit=kill if kill_at == "before-commit" else None)
if kill_at == "after-commit":
    kill()
"""


@pytest.mark.parametrize("kill_at", ["before-commit", "after-commit"])
def test_a_write_again_after_a_sigkill_leaves_one_run_per_trial(tmp_path, specs, kill_at):
    """A driver killed in a batch's transaction (or just after its commit) and resumed: the
    resume writes every journaled trial again, with its journaled run id."""
    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    tracker = Tracker(uri, EXPERIMENT)
    experiment_id = tracker.ensure_experiment()
    ids = [new_run_id() for _ in specs]
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER.format(root=root), uri,
                           experiment_id, json.dumps(ids), kill_at], check=False, cwd=root)
    assert done.returncode == -9  # SIGKILL

    def there() -> list[str]:
        return sorted(r.info.run_id for r in tracker.client.search_runs(
            [experiment_id], max_results=1000))

    assert there() == sorted(ids[:4] if kill_at == "before-commit" else ids)
    BulkRuns(uri, experiment_id).write([s.trial_run("", i) for s, i in zip(specs, ids)])
    assert there() == sorted(ids)
    assert len(table_rows(uri)["metrics"]) == sum(len(s.epochs) * len(KEYS) for s in specs) - 2


def test_an_error_before_the_commit_writes_nothing(tmp_path, specs):
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{tmp_path / 'error.db'}"
    tracker = Tracker(uri, EXPERIMENT)
    bulk = BulkRuns(uri, tracker.ensure_experiment())

    def fail() -> None:
        raise RuntimeError("disk full")

    with pytest.raises(MlflowException, match="disk full"):
        bulk.write([s.trial_run("") for s in specs], before_commit=fail)
    assert tracker.client.search_runs([tracker.experiment_id]) == []
    assert len(bulk.write([s.trial_run("") for s in specs])) == TRIALS
