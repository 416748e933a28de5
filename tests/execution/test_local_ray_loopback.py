"""A Ray that hpo starts on this machine listens on 127.0.0.1 only, and starts only what a study
uses: no dashboard, no autoscaler monitor, no log monitor, and a minimal dashboard agent.

Before, its GCS, raylet and workers listened on every interface (``::``) under the machine's
outward address: anyone on the network could reach a local study's Ray. The Ray is started in a
process of its own, as ``hpo search`` starts it (``start_ray(None)``), runs one task (its
workers work on loopback), and reports its addresses and every port its processes listen on.
"""

from __future__ import annotations

import json

from hpo.execution import _ray_private
from hpo.execution.cluster import LOOPBACK
from tests.fixtures.local_ray import run_python

START_AND_REPORT = """
import json, os, sys
import ray
import psutil  # Ray's own copy (ray/thirdparty_files), on the path once ray is imported
from hpo.execution.cluster import start_ray

assert start_ray(None)
assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
listening = sorted({c.laddr.ip for c in psutil.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN and c.pid in ours})
processes = [psutil.Process(pid) for pid in ours - {os.getpid()}]
commands = [" ".join(p.cmdline()) for p in processes]
# the raylet starts its agent (titled ray::DashboardAgent) with the command given to it here
agent_commands = [a.split("=", 1)[1] for p in processes for a in p.cmdline()
                  if a.startswith("--dashboard_agent_command=")]
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address,
                  "nodes": [n["NodeManagerAddress"] for n in ray.nodes()],
                  "listening": listening,
                  "dashboard": [c for c in commands if "dashboard/dashboard.py" in c],
                  "agent": [p.name() for p in processes if p.name() == "ray::DashboardAgent"],
                  "agent_commands": agent_commands,
                  "monitors": [c for c in commands
                               if "autoscaler/_private/monitor.py" in c or "log_monitor.py" in c],
                  "aiohttp": "aiohttp" in sys.modules}))
ray.shutdown()
"""

LOOPBACKS = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def test_the_local_ray_hpo_starts_listens_on_loopback_only():
    done = run_python("-c", START_AND_REPORT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["gcs"].rsplit(":", 1)[0] == LOOPBACK
    assert report["nodes"] == [LOOPBACK]
    assert report["listening"] and set(report["listening"]) <= LOOPBACKS, report
    # only what a study uses (_ray_private.lean_node): no dashboard process, no autoscaler or log
    # monitor, and the raylet's own agent runs minimal, which spared the driver aiohttp
    assert report["dashboard"] == [] and report["monitors"] == [], report
    assert report["agent"] and len(report["agent_commands"]) == 1, report
    assert "--minimal" in report["agent_commands"][0].split(), report
    assert report["aiohttp"] is False


def test_the_flag_and_the_node_starts_are_restored_after_the_start():
    from ray._private import ray_constants, utils
    from ray._private.node import Node

    def starts() -> tuple:
        return (Node.start_api_server, Node.start_monitor, Node.start_log_monitor,
                utils.get_dashboard_dependency_error)

    before, started = ray_constants.ENABLE_RAY_CLUSTER, starts()
    with _ray_private.loopback_node(), _ray_private.lean_node():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
        assert all(now is not then for now, then in zip(starts(), started))
        assert isinstance(utils.get_dashboard_dependency_error(), ImportError)
    assert ray_constants.ENABLE_RAY_CLUSTER == before
    assert starts() == started
