"""A new sqlite store: made 0600, and its tables made by one process at a time.

Before, two ``hpo search`` that opened one new ``mlflow.db`` at once both created its tables,
and the second died with a 40-line SQL dump (``table assessments already exists``).
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo.tracking.store import PAGE_SIZE, Tracker, sqlite_path

#: Imports MLflow, says so, waits for the go file, then opens the store as hpo search does.
OPEN_STORE = """
import sys, time
from pathlib import Path
import mlflow.store.tracking.sqlalchemy_store, mlflow.tracking
from hpo.tracking.store import Tracker
print("ready", flush=True)
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
tracker = Tracker(sys.argv[1], sys.argv[2])
tracker.check()
tracker.ensure_experiment()
print("opened", flush=True)
"""


@pytest.mark.parametrize("uri, path", [
    ("sqlite:///mlflow.db", "mlflow.db"),
    ("sqlite:////tmp/x/store.db?timeout=5", "/tmp/x/store.db"),
    ("sqlite:///:memory:", None),
    ("http://127.0.0.1:5000", None),
    ("postgresql://u@h/db", None),
])
def test_the_sqlite_file_of_a_tracking_uri(uri, path):
    assert sqlite_path(uri) == (Path(path) if path else None)


def test_a_new_store_is_readable_by_its_owner_only(tmp_path):
    store = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{store}", "private")
    tracker.check()
    tracker.ensure_experiment()
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert store.stat().st_size > 0  # MLflow made its tables in the file made here


def test_an_existing_store_keeps_its_mode(tmp_path):
    store = tmp_path / "mlflow.db"
    Tracker(f"sqlite:///{store}", "first").check()
    store.chmod(0o640)  # the owner's choice
    Tracker(f"sqlite:///{store}", "second").check()
    assert stat.S_IMODE(store.stat().st_mode) == 0o640


def test_two_processes_creating_one_new_store_at_once_both_succeed(tmp_path):
    store, go = tmp_path / "mlflow.db", tmp_path / "go"
    uri = f"sqlite:///{store}"
    processes = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, uri, "race", str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    try:
        for p in processes:  # both have imported MLflow: they open the store together
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        go.touch()
        results = [p.communicate(timeout=120) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(processes, results, strict=True):
        assert p.returncode == 0 and "opened" in out, err[-1500:]
        assert "already exists" not in err
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    experiments = Tracker(uri, "race").client.search_experiments()
    assert [e.name for e in experiments if e.name == "race"] == ["race"]


def test_the_lock_is_released_when_the_first_use_fails(tmp_path):
    # a store file that is no sqlite database: an error, and the next one does not hang
    store = tmp_path / "mlflow.db"
    store.write_text("not a database\n")
    for _ in range(2):
        start = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - MLflow's own error, reworded by check
            Tracker(f"sqlite:///{store}", "broken").check()
        assert time.monotonic() - start < 60


#: Opens a new store in the working directory, as `hpo search` does, and prints its contents:
#: the schema, the migration it is at, and its experiments (without their times).
DESCRIBE_NEW_STORE = """
import json, sqlite3, sys
from hpo.tracking.store import Tracker
Tracker.opened("sqlite:///mlflow.db", "study")
db = sqlite3.connect("mlflow.db")
tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
print(json.dumps({  # columns and indexes: a table's CREATE text may differ in layout only
    "schema": sorted([t, db.execute(f"pragma table_info('{t}')").fetchall(),
                      sorted(i[1] for i in db.execute(f"pragma index_list('{t}')"))]
                     for t in tables),
    "migration": db.execute("select version_num from alembic_version").fetchall(),
    "page_size": db.execute("pragma page_size").fetchone()[0],
    "experiments": db.execute("select experiment_id, name, artifact_location, lifecycle_stage,"
                              " workspace from experiments order by experiment_id").fetchall(),
}))
"""


def _new_store(folder: Path, cache: Path) -> dict:
    folder.mkdir()
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(cache)}
    run = subprocess.run([sys.executable, "-c", DESCRIBE_NEW_STORE], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return __import__("json").loads(run.stdout)


def test_a_new_store_copied_from_the_blank_tables_is_the_store_mlflow_makes(tmp_path):
    # MLflow's migrations run once, for the cache's copy; every later new store is that copy,
    # and the Default experiment MLflow adds to it points into the new store's own folder
    not_a_folder = tmp_path / "no-cache"
    not_a_folder.write_text("a file where the cache folder would be: MLflow migrates itself")
    by_mlflow = _new_store(tmp_path / "mlflow-made", not_a_folder)
    cache = tmp_path / "cache"
    first = _new_store(tmp_path / "first", cache)
    blank = cache / "hpo" / f"mlflow-{__import__('mlflow').__version__}-tables-{PAGE_SIZE}.db"
    assert blank.is_file()
    blank_mtime = blank.stat().st_mtime_ns
    copied = _new_store(tmp_path / "copied", cache)
    assert blank.stat().st_mtime_ns == blank_mtime  # copied, not made again
    assert copied["schema"] == first["schema"] == by_mlflow["schema"]
    assert copied["migration"] == by_mlflow["migration"]
    assert copied["page_size"] == PAGE_SIZE
    for store, folder in ((by_mlflow, "mlflow-made"), (copied, "copied")):
        assert store["experiments"] == [
            [0, "Default", str(tmp_path / folder / "mlruns" / "0"), "active", "default"],
            [1, "study", str(tmp_path / folder / "mlruns" / "1"), "active", "default"],
        ]
