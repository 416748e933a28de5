"""`hpo search --address` on a real three-node Ray cluster (conftest.py): trials spread over the
workers, a trial that raises is retried then recorded as failed, a worker node that dies
mid-study costs no finished result while its trials are retried on the other node, and a
trainable of the user's, in a folder installed nowhere, reaches the workers through Ray's runtime
environment.

The driver is a separate process on no node's behalf; it alone writes to MLflow (a sqlite store
in the test's folder), which the tests read back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

STUDY_TIMEOUT_S = 420


def study(name: str, **overrides: dict) -> dict:
    base = {
        "name": name,
        "seed": 1,
        "data": {"source": "digits", "preprocess": ["zero_center"]},
        "model": {"arch": "mlp", "hidden": [16], "activation": {"choice": ["relu", "tanh"]},
                  "init": "he", "batchnorm": False},
        "train": {"epochs": 2, "batch_size": 64, "lr": {"loguniform": [1e-2, 0.3]}},
        "search": {"rounds": 1, "trials_per_round": 4, "resources_per_trial": {"cpu": 1}},
        "sanity": {"enabled": False},
    }
    for section, values in overrides.items():
        base[section] = {**base[section], **values}
    return base


def start_search(cluster, folder: Path, spec: dict) -> tuple[subprocess.Popen, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    log = open(folder / "hpo.log", "w")  # noqa: SIM115 - closed with the process, below
    process = subprocess.Popen(
        [sys.executable, "-m", "hpo", "search", "space.yaml", "--address", cluster.address,
         "--tracking-uri", uri],
        cwd=folder, env=cluster.env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log  # type: ignore[attr-defined]
    return process, uri


def finish(process: subprocess.Popen, folder: Path) -> str:
    try:
        process.wait(timeout=STUDY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.log.close()  # type: ignore[attr-defined]
    return (folder / "hpo.log").read_text()


def trial_runs(uri: str, name: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`hpo.kind` = 'trial'", max_results=1000)
    return sorted(runs, key=lambda r: r.data.tags["hpo.trial"])


def test_study_through_address_runs_trials_on_several_nodes(ray_cluster, tmp_path):
    spec = study("spread")
    process, uri = start_search(ray_cluster, tmp_path, spec)
    output = finish(process, tmp_path)
    assert process.returncode == 0, output

    runs = trial_runs(uri, "spread")
    assert [r.data.tags["hpo.trial"] for r in runs] == ["1-01", "1-02", "1-03", "1-04"]
    assert all(r.info.status == "FINISHED" and "val_accuracy" in r.data.metrics for r in runs)
    nodes = {r.data.tags["hpo.node"] for r in runs}
    workers = {w.node_id() for w in ray_cluster.workers}
    # Two workers with one CPU each and a head with none: trials ran on both workers only.
    assert nodes == workers, (nodes, workers)


def test_trial_that_raises_is_retried_then_recorded_failed(ray_cluster, tmp_path):
    # A searched architecture that cannot fit 8x8 digits: four pooling blocks need 16x16, so
    # building the model raises inside the trial, on every attempt.
    spec = study("raises", model={"arch": "convnet", "hidden": {"choice": [[4], [4, 4, 4, 4]]}},
                 train={"epochs": 1}, search={"max_failures": 1})
    process, uri = start_search(ray_cluster, tmp_path, spec)
    output = finish(process, tmp_path)
    assert process.returncode == 0, output  # the trials that fit still give a best

    runs = trial_runs(uri, "raises")
    assert len(runs) == 4, [r.data.tags for r in runs]  # a retry reuses its run
    failed = [r for r in runs if r.data.params["hidden"] == "[4, 4, 4, 4]"]
    fine = [r for r in runs if r.data.params["hidden"] == "[4]"]
    assert failed and fine, "seed 1 should sample both architectures"
    for r in failed:
        assert r.info.status == "FAILED" and r.data.tags["hpo.status"] == "failed"
        assert "at least 16x16" in r.data.tags["hpo.error"]
        assert r.data.tags["hpo.attempts"] == "2"  # the first try and max_failures=1 retry
    for r in fine:
        assert r.info.status == "FINISHED" and r.data.tags["hpo.attempts"] == "1"


#: The user's loop, in the study's folder. Each trial writes where its module was imported from
#: (``__file__``) and on which node into ``OUT`` (the workers share this machine's disk), and
#: reports two epochs; the sleeps keep a trial long enough that both workers take some.
SHIPPED_LOOP = """\
import json
import os
import time
import uuid
from pathlib import Path

import ray

OUT = Path({out!r})


def fit(config, trial):
    where = {{"file": os.path.realpath(__file__),
              "node": ray.get_runtime_context().get_node_id()}}
    (OUT / f"{{uuid.uuid4().hex}}.json").write_text(json.dumps(where))
    for epoch in (1, 2):
        time.sleep(0.5)
        trial.report(epoch=epoch, val_score=config["lr"] * epoch, train_score=config["lr"])
"""


def test_a_trainable_in_an_uninstalled_folder_is_shipped_to_the_workers(ray_cluster, tmp_path):
    study_folder, elsewhere, out = (tmp_path / "study", tmp_path / "elsewhere",
                                    tmp_path / "imported-from")
    for folder in (study_folder, elsewhere, out):
        folder.mkdir()
    # A module name found nowhere else: not installed, not in the driver's working directory.
    (study_folder / "shipped_loop.py").write_text(SHIPPED_LOOP.format(out=str(out)))
    (study_folder / "study.yaml").write_text(yaml.safe_dump({
        "name": "shipped", "seed": 1, "trainable": "shipped_loop:fit",
        "train": {"epochs": 2, "lr": {"loguniform": [1e-2, 0.3]}},
        "search": {"metric": "val_score", "mode": "max", "rounds": 1, "trials_per_round": 4,
                   "resources_per_trial": {"cpu": 1}},
        "sanity": {"enabled": False},
    }))
    uri = f"sqlite:///{elsewhere / 'mlflow.db'}"
    log = open(elsewhere / "hpo.log", "w")  # noqa: SIM115 - finish() closes it
    process = subprocess.Popen(
        [sys.executable, "-m", "hpo", "search", str(study_folder / "study.yaml"),
         "--address", ray_cluster.address, "--tracking-uri", uri],
        cwd=elsewhere, env=ray_cluster.env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log  # type: ignore[attr-defined]
    output = finish(process, elsewhere)
    assert process.returncode == 0, output

    runs = trial_runs(uri, "shipped")
    assert [r.data.tags["hpo.trial"] for r in runs] == ["1-01", "1-02", "1-03", "1-04"]
    client = MlflowClient(tracking_uri=uri)
    for r in runs:
        assert r.info.status == "FINISHED", r.data.tags
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_score")]
        assert steps == [1, 2], (r.data.tags["hpo.trial"], steps)
    workers = {w.node_id(): w for w in ray_cluster.workers}
    assert {r.data.tags["hpo.node"] for r in runs} == set(workers)

    # Every worker imported the module from the working_dir Ray unpacked for the job in its
    # node's session folder (<temp dir>/session_*/runtime_resources/working_dir_files/
    # _ray_pkg_<hash>/), not from the study's folder, which this machine's workers could read
    # too. (A trial's working directory is Tune's folder for the trial, not the working_dir.)
    imports = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(imports) >= 4 and {i["node"] for i in imports} == set(workers), imports
    for where in imports:
        file = Path(where["file"])
        node_dir = workers[where["node"]].temp_dir.resolve()
        assert not file.is_relative_to(study_folder.resolve()), where
        assert file.is_relative_to(node_dir), (where, node_dir)
        session, resources, kind, package, name = file.relative_to(node_dir).parts
        assert session.startswith("session_") and (resources, kind) == (
            "runtime_resources", "working_dir_files"), where
        assert package.startswith("_ray_pkg_") and name == "shipped_loop.py", where


def test_worker_node_killed_mid_study_loses_no_result(ray_cluster, tmp_path):
    """Runs last: it kills worker 2. Trials last a few seconds so that one is surely running
    on worker 2 when it dies, after worker 2 has finished another: 48 epochs take ~4 s here, where
    the MLflow view of a trial's end lags it by up to ~1.3 s (a bulk batch's wait and the
    writer's idle tick), so the watch below has seconds to see both."""
    epochs = 48
    spec = study("node-dies", model={"hidden": [128, 128]},
                 train={"epochs": epochs, "batch_size": 16},
                 search={"trials_per_round": 6, "max_failures": 2})
    victim, survivor = ray_cluster.workers
    victim_id, survivor_id = victim.node_id(), survivor.node_id()
    process, uri = start_search(ray_cluster, tmp_path, spec)

    finished_before: dict[str, float] = {}
    deadline = time.time() + STUDY_TIMEOUT_S
    while time.time() < deadline and process.poll() is None:
        done = [r for r in trial_runs(uri, "node-dies") if r.info.status == "FINISHED"]
        on_victim = [r for r in done if r.data.tags.get("hpo.node") == victim_id]
        if on_victim and victim.running_trials():
            finished_before = {r.data.tags["hpo.trial"]: r.data.metrics["val_accuracy"]
                               for r in done}
            victim.kill()
            break
        time.sleep(0.5)
    output = finish(process, tmp_path)
    assert finished_before, "worker 2 was never caught running a trial\n" + output
    assert process.returncode == 0, output

    runs = trial_runs(uri, "node-dies")
    assert [r.data.tags["hpo.trial"] for r in runs] == [f"1-0{i}" for i in range(1, 7)]
    client = MlflowClient(tracking_uri=uri)
    for r in runs:  # every planned trial has a whole result, written once
        assert r.info.status == "FINISHED", r.data.tags
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")]
        assert steps == list(range(1, epochs + 1)), (r.data.tags["hpo.trial"], steps)
    by_name = {r.data.tags["hpo.trial"]: r for r in runs}
    for name, accuracy in finished_before.items():  # what finished before the death is intact
        assert by_name[name].data.metrics["val_accuracy"] == accuracy
        assert by_name[name].data.tags["hpo.attempts"] == "1"
    retried = [r for r in runs if r.data.tags["hpo.attempts"] != "1"]
    assert retried, "the trial running on the dead node was not retried"
    assert all(r.data.tags["hpo.node"] == survivor_id for r in retried)
