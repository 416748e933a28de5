"""A Ray that hpo starts on this machine listens on 127.0.0.1 only, and starts no dashboard.

Before, its GCS, raylet and workers listened on every interface (``::``) under the machine's
outward address: anyone on the network could reach a local study's Ray. The Ray is started in a
process of its own, as ``hpo search`` starts it (``start_ray(None)``), runs one task (its
workers work on loopback), and reports its addresses and every port its processes listen on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hpo.execution import _ray_private
from hpo.execution.cluster import LOOPBACK

START_AND_REPORT = """
import json, os
import ray
import psutil  # Ray's own copy (ray/thirdparty_files), on the path once ray is imported
from hpo.execution.cluster import start_ray

assert start_ray(None)
assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
listening = sorted({c.laddr.ip for c in psutil.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN and c.pid in ours})
commands = [" ".join(psutil.Process(pid).cmdline()) for pid in ours - {os.getpid()}]
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address,
                  "nodes": [n["NodeManagerAddress"] for n in ray.nodes()],
                  "listening": listening,
                  "dashboard": [c for c in commands if "dashboard/dashboard.py" in c],
                  "agent": [c for c in commands if "dashboard/agent.py" in c]}))
ray.shutdown()
"""

LOOPBACKS = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def test_the_local_ray_hpo_starts_listens_on_loopback_only():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", START_AND_REPORT], capture_output=True, check=False,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["gcs"].rsplit(":", 1)[0] == LOOPBACK
    assert report["nodes"] == [LOOPBACK]
    assert report["listening"] and set(report["listening"]) <= LOOPBACKS, report
    # no dashboard process (_ray_private.no_dashboard); the raylet's own agent still runs
    assert report["dashboard"] == [] and report["agent"], report


def test_the_flag_and_the_dashboard_start_are_restored_after_the_start():
    from ray._private import ray_constants
    from ray._private.node import Node

    before, start_api_server = ray_constants.ENABLE_RAY_CLUSTER, Node.start_api_server
    with _ray_private.loopback_node(), _ray_private.no_dashboard():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
        assert Node.start_api_server is not start_api_server
    assert ray_constants.ENABLE_RAY_CLUSTER == before
    assert Node.start_api_server is start_api_server
