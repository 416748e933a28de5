"""A disk that fills up and a tracking server that goes away mid-round: `hpo search` stops with
one clear line and exit 1, leaves no run RUNNING where the store can still be written, and
`--resume` finishes the study exactly (one run per trial, every epoch once).

The disk is a real one: a small tmpfs mounted for the test (root only; skipped otherwise),
filled by the test mid-round. The server is a real `mlflow server`, killed mid-round and
started again on the same store for the resume.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.journal import events
from tests.fixtures.mlflow_server import MlflowServer
from tests.study.test_interrupt_e2e import EPOCHS, TRIALS, Driver, _study

pytestmark = pytest.mark.slow


def _stop(proc: subprocess.Popen, timeout: float = 180) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of Ray outlived the driver


def _one_clear_line(err: str, starts: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("round ")]  # progress
    assert lines[-1].startswith(starts), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) <= 3, err[-3000:]


def _resume_exactly(drv: Driver, extra: list[str] = ()) -> None:
    done = subprocess.run([sys.executable, "-m", "hpo", *drv.args, *extra, "--resume"],
                          cwd=drv.tmp, env=drv.env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = drv.runs()
    kinds = sorted(r.data.tags["hpo.kind"] for r in runs)
    assert kinds == ["round", "study", *["trial"] * TRIALS]
    for r in runs:
        assert r.info.status == "FINISHED"
        if r.data.tags["hpo.kind"] == "trial":
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")]
            assert steps == list(range(1, EPOCHS + 1))
    ends = [e for e in events(drv.journal) if e["event"] == "trial_end"]
    assert len(ends) == TRIALS and events(drv.journal)[-1]["event"] == "study_end"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.contextmanager
def _full(disk: Path) -> Iterator[Path]:
    """``disk`` filled, and kept full while the block runs: what the study frees (the weights
    of trials that fell out of the top 3, a weights file whose write failed) is taken at once,
    as on a disk that other programs fill too. Yields the filler, to delete afterwards."""
    filler, done = disk / "filler", threading.Event()

    def fill() -> None:
        with open(filler, "ab", buffering=0) as fh:
            while not done.is_set():
                try:
                    fh.write(b"\0" * 4096)
                except OSError:  # full: try again for whatever is freed next
                    time.sleep(0.0005)

    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        while True:  # the bulk of it, fast
            fh.write(b"\0" * (1 << 20))
            fh.flush()
    keeper = threading.Thread(target=fill, daemon=True)
    keeper.start()
    try:
        yield filler
    finally:
        done.set()
        keeper.join()


def test_a_full_disk_mid_round_stops_cleanly_and_resume_finishes(tmp_path, small_disk):
    drv = Driver(tmp_path, "full", _study("full", sampler="random", rounds=1))
    drv.journal = small_disk / "hpo_runs" / "full" / "journal.jsonl"
    drv.args += ["--study-root", str(small_disk / "hpo_runs")]  # the store stays writable
    proc = drv.start()
    drv.wait_mid_round(proc, 1, ended=2)
    with _full(small_disk) as filler:
        rc = _stop(proc)
    err = drv.err.read_text()
    assert rc == 1, err[-3000:]
    _one_clear_line(err, "hpo: error: the disk is full")
    _, runs = drv.runs()
    assert not [r for r in runs if r.info.status == "RUNNING"]

    filler.unlink()
    _resume_exactly(drv)


def test_the_tracking_server_gone_mid_round_stops_cleanly_and_resume_finishes(tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    try:
        drv = Driver(tmp_path, "gone", _study("gone", sampler="random", rounds=1))
        drv.uri = server.url
        drv.args[drv.args.index("--tracking-uri") + 1] = drv.uri
        proc = drv.start()
        # mid-round: two trials ended, four to go. Not wait_mid_round's "and one running in
        # the journal": the server's writers (four at once) keep the journal up with trials
        # shorter than its polls, so it may show none running between them.
        deadline = time.monotonic() + 300
        while sum(e["event"] == "trial_end" for e in events(drv.journal)) < 2:
            assert proc.poll() is None, drv.err.read_text()[-3000:]
            assert time.monotonic() < deadline, "the round never got going"
            time.sleep(0.05)
        server.kill()
        rc = _stop(proc)
        err = drv.err.read_text()
        assert rc == 1, err[-3000:]
        _one_clear_line(err, f"hpo: error: the MLflow tracking store {drv.uri} stopped answering")

        server = MlflowServer(server.root, port=server.port).start()  # the same store, back
        _resume_exactly(drv)
    finally:
        server.kill()
