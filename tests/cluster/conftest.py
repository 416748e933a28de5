"""A real multi-node Ray cluster on loopback: `ray start --head` and `ray start --address`
workers, each its own process tree, with token authentication on.

Every node advertises 127.0.0.2 (loopback; Ray would replace 127.0.0.1 with the machine's
network address), has its own temp dir and ports, and is stopped by the PID of its own
`ray start --block` process, never by `ray stop`, which would also stop other Ray instances on
the machine.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.ports import free_port

BIN = Path(sys.executable).parent
NODE_IP = "127.0.0.2"
OBJECT_STORE_BYTES = 100 * 1024 * 1024
START_TIMEOUT_S = 60


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    temp_dir: Path
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> list[int]:
        """This node's processes: the session its `ray start` leads (Ray's workers get process
        groups of their own, not sessions), and anything else that names its temp dir."""
        mine = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                sid = os.getsid(int(entry.name))
                args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except (OSError, ProcessLookupError):
                continue
            if sid == self.process.pid or any(self._names_temp_dir(a) for a in args):
                mine.append(int(entry.name))
        return mine

    def _names_temp_dir(self, arg: str) -> bool:
        root = str(self.temp_dir)
        at = arg.find(root)
        return at >= 0 and arg[at + len(root):at + len(root) + 1] in ("", "/")

    def started(self) -> bool:
        return b"Ray runtime started" in self.log.read_bytes()

    def node_id(self) -> str:
        """The Ray node id, read from this node's raylet command line."""
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            for pid in self.pids():
                try:
                    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if args and args[0].endswith(b"/raylet"):
                    for arg in args:
                        if arg.startswith(b"--node_id="):
                            return arg.split(b"=", 1)[1].decode()
            time.sleep(0.5)
        raise RuntimeError(f"no raylet found for {self.name}; see {self.log}")

    def running_trials(self) -> int:
        """Processes of this node that are inside a trial's training call right now."""
        count = 0
        for pid in self.pids():
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::ImplicitFunc.train"):
                count += 1
        return count

    def kill(self) -> None:
        """Sudden death: SIGKILL every process of the node at once (raylet, workers, agents)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Orderly: SIGTERM to `ray start --block` stops its node; SIGKILL what is left."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for _ in range(3):
            left = [p for p in self.pids() if p != os.getpid()]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        if self.process.poll() is None:
            self.process.wait(timeout=10)


@dataclass
class LocalCluster:
    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment every process of this cluster, the driver included, runs with."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                   RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
                   # A dead node is noticed after 5 missed health checks: 5 s, not Ray's 15 s.
                   RAY_health_check_period_ms="1000")
        return env

    def _start(self, name: str, args: list[str]) -> Node:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True)
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", f"--node-ip-address={NODE_IP}",
                 f"--temp-dir={temp_dir}", f"--object-store-memory={OBJECT_STORE_BYTES}",
                 f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats",
                 *args],
                stdout=out, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True,
            )
        node = Node(name, process, temp_dir, log)
        self.nodes.append(node)
        return node

    def _wait_for(self, nodes: int, cpus: int) -> None:
        """Until `ray status` lists ``nodes`` live nodes offering ``cpus`` CPUs in all."""
        deadline, status = time.time() + START_TIMEOUT_S, None
        while time.time() < deadline:
            dead = [n for n in self.nodes if not n.alive]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited:\n{dead[0].log.read_text()[-3000:]}")
            if not all(n.started() for n in self.nodes):  # cheaper than asking `ray status`
                time.sleep(0.5)
                continue
            status = subprocess.run([str(BIN / "ray"), "status", f"--address={self.address}"],
                                    capture_output=True, text=True, env=self.env(), timeout=60)
            active = status.stdout.split("Pending:")[0]
            if (status.returncode == 0 and active.count(" node_") == nodes
                    and (cpus == 0 or f"/{cpus:.1f} CPU" in status.stdout)):
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not reach {nodes} nodes and {cpus} CPUs in "
                           f"{START_TIMEOUT_S} s:\n{status.stdout}{status.stderr}")

    def start(self, *, workers: int, worker_cpus: int = 1) -> None:
        # The head offers no CPU: every trial runs on a worker node.
        self._start("head", ["--head", f"--port={self.port}", "--num-cpus=0",
                             "--include-dashboard=false"])
        self._wait_for(1, 0)
        for i in range(1, workers + 1):
            self._start(f"worker{i}", [f"--address={self.address}",
                                       f"--num-cpus={worker_cpus}"])
        self._wait_for(1 + workers, workers * worker_cpus)

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.name.startswith("worker")]

    def stop(self) -> None:
        for node in reversed(self.nodes):  # workers first, the head last
            try:
                node.stop()
            except Exception as exc:  # noqa: BLE001 - tear down every node whatever happens
                print(f"stopping {node.name}: {exc}", file=sys.stderr)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    """A head (no CPUs) and two workers with one CPU each: concurrent trials must spread."""
    # Unix socket paths are limited to 107 bytes: keep the temp dir short.
    root = Path(tempfile.mkdtemp(prefix="hpo-ray-", dir="/tmp"))
    cluster = LocalCluster(root)
    atexit.register(cluster.stop)  # even if pytest itself is interrupted
    try:
        cluster.start(workers=2, worker_cpus=1)
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)
        shutil.rmtree(root, ignore_errors=True)
