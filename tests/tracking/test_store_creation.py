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

from hpo.tracking.store import Tracker, sqlite_path

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
