"""After its last trial a study stops its Ray while the final work runs: the driver's connection
on the study's thread, Ray's processes on a thread of their own (``disconnect_local_ray``).

``ray.shutdown`` whole on a thread of its own let the study's thread free Ray objects while
Ray's core worker shut down, and the core worker then ended the driver: exit code 1, nothing on
stderr from hpo, the study's end never written. The driver here is a process of its own that
starts Ray as ``hpo search`` does, holds ObjectRefs, and frees a batch of them every 5 ms while
Ray stops, as a study's garbage collection may.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.fixtures.local_ray import run_python

DRIVER = """
import sys, threading, time
import ray
import psutil  # Ray's own copy (ray/thirdparty_files), on the path once ray is imported
from hpo.execution.cluster import disconnect_local_ray, start_ray

assert start_ray(None)
ours = [p.pid for p in psutil.Process().children(recursive=True)]
batches = [[ray.put(i) for i in range(10)] for _ in range(400)]
if sys.argv[1] == "whole":
    stopping = threading.Thread(target=ray.shutdown)
else:
    stopping = threading.Thread(target=disconnect_local_ray())
stopping.start()
while stopping.is_alive() and batches:
    del batches[-1]  # the refs' __del__, on this thread
    time.sleep(0.005)
stopping.join()
del batches
alive = []
for pid in ours:
    try:
        alive.append(psutil.Process(pid))
    except psutil.NoSuchProcess:
        pass
gone = psutil.wait_procs(alive, timeout=30)[1] == []
print("ray stopped" if gone and not ray.is_initialized() else "ray left running", flush=True)
"""


def run_driver(way: str) -> subprocess.CompletedProcess:
    return run_python("-c", DRIVER, way)


def test_refs_freed_while_ray_stops_do_not_end_the_driver():
    done = run_driver("in-two")
    assert done.returncode == 0, done.stderr[-3000:]
    # every process that Ray started (GCS, raylet, agents, workers) has ended
    assert done.stdout.strip().splitlines()[-1] == "ray stopped", done.stdout


@pytest.mark.slow
def test_ray_shutdown_whole_on_a_thread_ends_the_driver_as_it_did():
    """Why the shutdown is in two: the same driver with ``ray.shutdown`` on the thread dies
    (exit code 1; Ray's "core worker has already been shutdown" on stderr, or nothing). It is a
    race, lost in 31 of 32 runs under load: up to three tries. Should all three live on a Ray
    upgrade, the upgrade may have fixed it, and touch 16 can go."""
    tries = []
    for _ in range(3):
        done = run_driver("whole")
        tries.append((done.returncode, done.stdout[-300:], done.stderr[-1000:]))
        if done.returncode == 1 and "ray stopped" not in done.stdout:
            return
    pytest.fail(f"ray.shutdown on a thread left the driver alive 3 times: {tries}")
