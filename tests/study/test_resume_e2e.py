"""`hpo search --resume` after the driver is SIGKILLed mid-round: same study, exact counts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from tests.fixtures.journal import events

from hpo.tracking.trials import CRASH_ENV, ONE_BY_ONE_ENV

pytestmark = pytest.mark.slow

ROUNDS, TRIALS, EPOCHS = 2, 6, 4
STUDY = {
    "name": "resumable",
    "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
    "model": {"hidden": [64], "activation": {"choice": ["relu", "tanh"]}, "init": "he"},
    "train": {"epochs": EPOCHS, "lr": {"loguniform": [1e-3, 0.5]}},
    # random: the same trials as ever, none diverging before the kill point (a resume test)
    "search": {"rounds": ROUNDS, "trials_per_round": TRIALS, "sampler": "random"},
    "sanity": {"enabled": False},
}


def finished_in_round(evts: list[dict], k: int) -> set[str]:
    return {e["record"]["trial_id"] for e in evts
            if e["event"] == "trial_end" and e["record"]["round"] == k}


@pytest.mark.parametrize("writes", ["one-by-one", "bulk"])
def test_killed_driver_resumes_without_rerunning_or_duplicating(tmp_path, writes):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(STUDY))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    journal = tmp_path / "hpo_runs" / "resumable" / "journal.jsonl"
    cmd = [sys.executable, "-m", "hpo", "search", str(space), "--tracking-uri", uri, "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != ONE_BY_ONE_ENV}
    if writes == "one-by-one":
        # The driver SIGKILLs itself where a kill hurts most: round 2's second trial is
        # journaled and its metrics are in MLflow, but its run is not yet marked ended. A
        # --resume that ran it again would log its epochs into the same run twice.
        env.update({ONE_BY_ONE_ENV: "1", CRASH_ENV: "trial-metrics:2:2"})
    else:
        # Mid-flush: the batch holding round 2's second trial to end is journaled and its rows
        # are in the transaction, not committed. A --resume must write those runs from the
        # journal, once, and not run their trials again.
        env[CRASH_ENV] = "trial-batch:2:2"
    driver = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert driver.wait(timeout=600) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the Ray it started in-process
    before = events(journal)
    done_before = finished_in_round(before, 1) | finished_in_round(before, 2)
    assert len(finished_in_round(before, 1)) == TRIALS
    assert not any(e["event"] == "study_end" for e in before)

    client = MlflowClient(tracking_uri=uri)
    (cut,) = [e["record"] for e in before if e["event"] == "trial_end"][-1:]
    if writes == "one-by-one":
        assert len(finished_in_round(before, 2)) == 2
        assert client.get_run(cut["run_id"]).info.status == "RUNNING"
        assert [m.step for m in client.get_metric_history(cut["run_id"], "val_accuracy")] == (
            list(range(1, EPOCHS + 1)))
    else:  # the batch may hold more trials that ended in the same second, up to all
        assert 2 <= len(finished_in_round(before, 2)) <= TRIALS
        with pytest.raises(MlflowException, match="not found"):
            client.get_run(cut["run_id"])  # journaled, its run rolled back

    # The kill can land between creating a trial's MLflow run and journaling it; make that
    # happen for sure: an orphan trial run under round 2 that the journal does not know.
    round2 = next(e["run_id"] for e in before if e["event"] == "round_start" and e["round"] == 2)
    orphan = client.create_run(client.get_experiment_by_name("resumable").experiment_id,
                               tags={"mlflow.parentRunId": round2, "hpo.kind": "trial"})

    resumed = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr

    after = events(journal)[len(before):]
    ends = Counter(e["record"]["trial_id"] for e in after if e["event"] == "trial_end")
    assert not set(ends) & done_before  # no finished trial ended (so trained) twice
    assert sum(ends.values()) == TRIALS - len(finished_in_round(before, 2))
    assert after[-1]["event"] == "study_end"

    assert client.get_run(orphan.info.run_id).info.lifecycle_stage == "deleted"
    exp = client.get_experiment_by_name("resumable")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    kinds = Counter(r.data.tags["hpo.kind"] for r in runs)
    assert kinds == {"study": 1, "round": ROUNDS, "trial": ROUNDS * TRIALS}
    (study,) = [r for r in runs if r.data.tags["hpo.kind"] == "study"]
    assert study.info.run_id == before[0]["study_run_id"]
    assert study.info.status == "FINISHED" and study.data.tags["hpo.resumed"] == "true"
    trials = [r for r in runs if r.data.tags["hpo.kind"] == "trial"]
    assert len({t.data.tags["hpo.trial"] for t in trials}) == ROUNDS * TRIALS
    assert cut["run_id"] in {t.info.run_id for t in trials}  # its run, written or completed
    for t in trials:
        assert t.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(t.info.run_id, "val_accuracy")]
        # every epoch it trained once, nothing logged twice (a diverged trial stops early)
        assert steps == list(range(1, int(t.data.tags["hpo.epochs"]) + 1)), t.info.run_name
        assert t.data.tags["hpo.status"] == "diverged" or len(steps) == EPOCHS

    rerun = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 2 and "already finished" in rerun.stderr


def test_resume_without_a_study_is_an_input_error(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(STUDY))
    run = subprocess.run([sys.executable, "-m", "hpo", "search", str(space), "--resume",
                          "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 2 and "no interrupted study 'resumable'" in run.stderr
