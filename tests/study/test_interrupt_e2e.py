"""Ctrl-C and SIGTERM sent to a real `hpo search` mid-round stop the study, and `--resume`
finishes the same study: the trials that ran are kept, the rest sampled as if nothing happened.

Ray Tune's own SIGINT handler used to end the round early (refining on part of it, exit 0,
cut trials RUNNING in MLflow forever); SIGTERM aborted with exit 134.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from tests.fixtures.journal import events

from hpo.config.spec import load_spec
from hpo.execution.round import _searcher
from hpo.space.bridge import decode, round_seed

pytestmark = pytest.mark.slow

# Trials long enough that one still runs when the signal lands: with 3 epochs both running
# trials once ended, journaled, before the stop took hold (a fresh clone's make test), and
# no trial was cut. 10 epochs came to take ~0.16 s a trial, under the journal's ~0.25 s lag;
# 40 take ~0.5 s (and no trial of these seeds diverges, which a smaller batch made some do).
TRIALS, EPOCHS = 6, 40


def _study(name: str, *, sampler: str, rounds: int) -> dict:
    return {
        "name": name, "seed": 5,
        "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
        "model": {"hidden": [64], "activation": {"choice": ["relu", "tanh"]}, "init": "he"},
        "train": {"epochs": EPOCHS, "lr": {"loguniform": [1e-3, 0.5]}},
        "search": {"rounds": rounds, "trials_per_round": TRIALS, "sampler": sampler},
        "sanity": {"enabled": False},
    }


def count(evts: list[dict], kind: str, k: int | None = None) -> int:
    return sum(e["event"] == kind and (k is None or e["record"]["round"] == k) for e in evts)


class Driver:
    """`hpo search` in a session of its own (a terminal's process group: the driver and the
    Ray it starts), its output in files."""

    def __init__(self, tmp: Path, name: str, study: dict) -> None:
        self.tmp, self.name = tmp, name
        self.space = tmp / f"{name}.yaml"
        self.space.write_text(yaml.safe_dump(study))
        self.uri = f"sqlite:///{tmp / 'mlflow.db'}"
        self.journal = tmp / "hpo_runs" / name / "journal.jsonl"
        self.args = ["search", str(self.space), "--tracking-uri", self.uri, "--quiet"]
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled"}

    def start(self) -> subprocess.Popen:
        self.err = self.tmp / f"{self.name}.err"
        with open(self.err, "w") as err:
            return subprocess.Popen([sys.executable, "-m", "hpo", *self.args], cwd=self.tmp,
                                    env=self.env, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=err)

    def wait_mid_round(self, proc: subprocess.Popen, k: int, ended: int) -> list[dict]:
        """Until round k has ``ended`` trials ended and one running."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            evts = events(self.journal)
            if count(evts, "trial_end", k) >= ended and count(evts, "trial_start", k) > count(
                    evts, "trial_end", k):
                return evts
            assert proc.poll() is None, self.err.read_text()[-3000:]
            time.sleep(0.1)
        pytest.fail("the round never got going")

    def runs(self):
        client = MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(self.name)
        return client, client.search_runs([exp.experiment_id], max_results=1000)


def _stop(proc: subprocess.Popen, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of Ray outlived the driver
        except ProcessLookupError:
            pass


def _interrupted(drv: Driver, proc: subprocess.Popen, sig: signal.Signals, *, group: bool
                 ) -> tuple[list[dict], str]:
    """Send ``sig`` mid-round 1; check the stop; (journal before, the printed resume command)."""
    before = drv.wait_mid_round(proc, 1, ended=2)
    (os.killpg if group else os.kill)(proc.pid, sig)
    rc = _stop(proc)
    err = drv.err.read_text()
    assert rc == 128 + sig, err[-3000:]
    line = err.strip().splitlines()[-1]
    expected = shlex.join(["hpo", *drv.args, "--resume"])
    assert line == f"hpo: interrupted ({sig.name}); resume with: {expected}"
    assert "Traceback" not in err

    after = events(drv.journal)
    assert after[-1] == {"event": "interrupted", "reason": sig.name, "status": "KILLED"}
    assert not any(e["event"] in ("round_end", "study_end") for e in after)  # no refine
    _, runs = drv.runs()
    status = Counter((r.data.tags["hpo.kind"], r.info.status) for r in runs)
    cut = count(after, "trial_start") - count(after, "trial_end")
    assert cut >= 1
    assert status == {("study", "KILLED"): 1, ("round", "KILLED"): 1,
                      ("trial", "FINISHED"): count(after, "trial_end"), ("trial", "KILLED"): cut}
    return before, expected


def _resume(drv: Driver, command: str) -> None:
    argv = shlex.split(command)
    assert argv[0] == "hpo"
    done = subprocess.run([sys.executable, "-m", "hpo", *argv[1:]], cwd=drv.tmp, env=drv.env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def _exact(drv: Driver, rounds: int) -> list[dict]:
    """One run per study, round and trial, all FINISHED, every epoch logged once; the
    sampled values of each trial of round 1, from the journal."""
    client, runs = drv.runs()
    assert Counter(r.data.tags["hpo.kind"] for r in runs) == {
        "study": 1, "round": rounds, "trial": rounds * TRIALS}
    for r in runs:
        assert r.info.status == "FINISHED"
        if r.data.tags["hpo.kind"] == "trial":
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")]
            assert steps == list(range(1, EPOCHS + 1))
    evts = events(drv.journal)
    assert evts[-1]["event"] == "study_end"
    ends = [e["record"] for e in evts if e["event"] == "trial_end"]
    assert len(ends) == rounds * TRIALS  # no trial ended (so trained) twice
    return [r["sampled"] for r in ends if r["round"] == 1]


def _uninterrupted_round_1(space: Path) -> list[dict]:
    """What round 1 of the study samples when nothing stops it: its searcher, asked as Tune
    asks it (random and QMC sample independently of the results)."""
    spec = load_spec(space)
    ranges = spec.distributions()
    searcher, _ = _searcher(spec, ranges, pack=1, num_trials=TRIALS,
                            seed=round_seed(spec.seed, 1), done=(), rerun=())
    return [decode(ranges, searcher.suggest(f"t{i}")) for i in range(TRIALS)]


def _key(config: dict) -> tuple:
    return tuple(sorted((k, repr(list(v) if isinstance(v, tuple) else v))
                        for k, v in config.items()))


def _started(evts: list[dict]) -> set[tuple]:
    return {_key(e["record"]["sampled"]) for e in evts
            if e["event"] == "trial_start" and e["record"]["round"] == 1}


def test_ctrl_c_mid_round_stops_the_study_and_resume_finishes_it(tmp_path):
    drv = Driver(tmp_path, "ctrl-c", _study("ctrl-c", sampler="random", rounds=2))
    before, command = _interrupted(drv, drv.start(), signal.SIGINT, group=True)  # a terminal's
    _resume(drv, command)
    round_1 = {_key(c) for c in _exact(drv, rounds=2)}
    assert _started(before) <= round_1
    assert round_1 == {_key(c) for c in _uninterrupted_round_1(drv.space)}


def test_sigterm_mid_round_stops_the_study_and_resume_finishes_it(tmp_path):
    drv = Driver(tmp_path, "sigterm", _study("sigterm", sampler="qmc", rounds=1))
    before, command = _interrupted(drv, drv.start(), signal.SIGTERM, group=False)  # as docker
    _resume(drv, command)
    round_1 = {_key(c) for c in _exact(drv, rounds=1)}
    assert _started(before) <= round_1
    assert round_1 == {_key(c) for c in _uninterrupted_round_1(drv.space)}


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    drv = Driver(tmp_path, "twice", _study("twice", sampler="random", rounds=1))
    proc = drv.start()
    drv.wait_mid_round(proc, 1, ended=0)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    started = time.monotonic()
    rc = _stop(proc, timeout=30)
    assert rc == 130 and time.monotonic() - started < 10
    assert "SIGINT again: exiting now" in drv.err.read_text()
