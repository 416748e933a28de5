"""One ``hpo search`` of a study at a time: the study folder's lock.

Two drivers of one study would mix and lose its runs; the second is refused at once, naming
the process that holds the study. The kernel releases a lock with its process, so the lock
file a killed driver leaves is taken over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hpo.errors import InputError
from hpo.study.lock import StudyLock

STUDY = {
    "name": "locked",
    "data": {"source": "digits"},
    "model": {"hidden": [16], "activation": "relu"},
    "train": {"epochs": 1, "lr": {"loguniform": [0.001, 0.1]}},
    "search": {"rounds": 1, "trials_per_round": 2},
    "sanity": {"enabled": False},
}

HOLDER = """
import sys, time
from hpo.study.lock import StudyLock
StudyLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold(folder: Path) -> subprocess.Popen:
    """Another process that holds the study's lock until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def kill(holder: subprocess.Popen) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)


def test_the_lock_holds_the_pid_and_a_second_holder_is_refused_naming_it(tmp_path):
    folder = tmp_path / "root" / "study"
    with StudyLock(folder) as lock:  # makes the folder
        assert (folder / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(InputError) as info:
            StudyLock(folder).acquire()  # another open file: refused, even in one process
        assert str(folder) in str(info.value) and f"pid {os.getpid()}" in str(info.value)
        assert info.value.exit_code == 2
        assert lock.held
    assert not lock.held
    StudyLock(folder).acquire().release()  # free again


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError), StudyLock(tmp_path):
        raise RuntimeError("boom")
    StudyLock(tmp_path).acquire().release()


def test_a_lock_held_by_another_process_is_refused_then_taken_after_it_is_killed(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(InputError, match=f"pid {holder.pid}"):
            StudyLock(tmp_path).acquire()
    finally:
        kill(holder)
    # the killed holder's lock file stays, with its pid: stale, and taken over
    assert (tmp_path / ".lock").read_text().strip() == str(holder.pid)
    with StudyLock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


@pytest.mark.slow  # a real `hpo search` process: imports torch and loads the data
def test_a_second_search_of_a_running_study_exits_2_at_once_naming_the_holder(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(STUDY))
    root, store = tmp_path / "root", tmp_path / "store" / "mlflow.db"
    folder = root / "locked"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    holder = hold(folder)
    try:
        start = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "hpo", "search", str(space), "--study-root", str(root),
             "--tracking-uri", f"sqlite:///{store}", "--quiet"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - start
    finally:
        kill(holder)
    assert second.returncode == 2, second.stderr
    assert str(folder) in second.stderr and f"pid {holder.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert took < 60  # refused before Ray or MLflow start
    assert not store.parent.exists()  # no MLflow store, experiment or run
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # no journal
    with StudyLock(folder):  # the killed holder's lock is taken over
        pass
