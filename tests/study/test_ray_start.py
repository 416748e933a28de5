"""A Ray on this machine starts while the study loads its data, and stops again when the study
stops before using it.

``hpo.search`` starts Ray on a thread of its own (``hpo.execution.cluster.RayStart``) before it
imports torch and loads the data, so Ray's processes and warm workers start on the second core.
The loaders below see Ray come up while they run; the second one then fails, and the study stops
with its input error, shuts that Ray down and leaves no study folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# The data of both studies. ``load`` records whether Ray came up while it ran (it waits for up
# to a minute), then returns two moons, or raises if asked to.
LOADER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path

    import numpy as np

    def load(config):
        start = time.monotonic()
        ray = None
        while time.monotonic() - start < 60:
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                break
            time.sleep(0.05)
        Path(config["record"]).write_text(json.dumps(
            {"ray_up": bool(ray is not None and ray.is_initialized())}))
        if config["fail"]:
            raise ValueError("this loader fails")
        rng = np.random.default_rng(config["seed"])
        x = rng.normal(size=(200, 2)).astype(np.float32)
        return {"x_train": x, "y_train": (x[:, 0] > 0).astype(np.int64)}
""")

# A user's script: a study that runs, then one whose loader fails; what each saw, as JSON.
SCRIPT = textwrap.dedent("""
    import json, sys, threading
    import hpo, ray

    def study(name, fail):
        return {
            "name": name, "seed": 0,
            "data": {"source": "python", "loader": "loader:load",
                     "options": {"record": f"{name}.json", "fail": fail}},
            "model": {"arch": "mlp", "hidden": [8], "activation": "relu"},
            "train": {"epochs": 1, "batch_size": 64, "lr": {"loguniform": [0.01, 0.1]}},
            "search": {"rounds": 1, "trials_per_round": 2, "sampler": "random"},
            "sanity": {"enabled": False},
        }

    root, uri = sys.argv[1:3]
    hpo.search(study("runs", False), tracking_uri=uri, quiet=True, study_root=root)
    after_run = ray.is_initialized()
    try:
        hpo.search(study("fails", True), tracking_uri=uri, quiet=True, study_root=root)
        error = None
    except hpo.InputError as exc:
        error = str(exc)
    for thread in threading.enumerate():
        if thread.name == "hpo-ray-start":
            thread.join(timeout=10)
    print(json.dumps({"after_run": after_run, "error": error,
                      "after_error": ray.is_initialized(),
                      "threads": [t.name for t in threading.enumerate()
                                  if t.name == "hpo-ray-start"]}))
""")


def test_ray_starts_while_the_data_loads_and_stops_with_an_input_error(tmp_path):
    (tmp_path / "loader.py").write_text(LOADER)
    (tmp_path / "search.py").write_text(SCRIPT)
    root = tmp_path / "runs"
    run = subprocess.run([sys.executable, "search.py", str(root),
                          f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert json.loads((tmp_path / "runs.json").read_text()) == {"ray_up": True}
    assert json.loads((tmp_path / "fails.json").read_text()) == {"ray_up": True}
    assert seen["after_run"] is False  # the study shut down the Ray it started
    assert seen["error"] and "this loader fails" in seen["error"]
    assert seen["after_error"] is False and seen["threads"] == []
    assert sorted(p.name for p in root.iterdir()) == ["runs"]  # nothing of the failed study
