"""The Ray that runs the trials: connect or start it, and its warm workers.

A Ray that hpo starts on this machine preloads torch and the trial code in one worker process
per CPU (``WARM_WORKERS``), and between rounds asks the raylet for the next round's; a cluster
(``--address`` / ``RAY_ADDRESS``) is used as it is.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.config.spec import Spec
from hpo.errors import InputError, RunError
from hpo.execution import _ray_private

__all__ = ["WARM_WORKERS", "RayStart", "await_warm_workers", "check_reachable",
           "code_runtime_env", "concurrent_trials", "disconnect_local_ray",
           "prestart_warm_workers", "quiet_libraries", "start_ray", "start_ray_soon",
           "warm_pool_started"]

# Ray Tune's per-trial CSV/JSON/TensorBoard loggers: the driver's MLflow callback replaces them.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def quiet_libraries() -> None:
    """Keep the terminal for hpo's own progress and tables."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("ray.tune", "ray.tune.analysis.experiment_analysis", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Tune's saved experiment state: hpo resumes from its journal, never from it. Tune logs a
    # failure to save it (a full disk) with a traceback, and goes on; the study says what failed.
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _NotStoppingErrors) for f in controller.filters):
        controller.addFilter(_NotStoppingErrors())


class _NotStoppingErrors(logging.Filter):
    """Tune logs, with a traceback, an error raised while it stops a trial: that is hpo's round
    writer failing (a full disk, a store gone), which the round raises and the study reports in
    one line. Tune's copy would bury that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().endswith("Error stopping trial.")


def _warm_workers(study: Spec | None) -> dict[str, Any]:
    """What a Ray that hpo starts on this machine does as it starts: one worker process per
    CPU, each importing torch and hpo's trainer before any trial asks for one. A round's trial
    actors land in those processes (see ``_tune_for_short_trials``), so its first trials do not
    pay for a process and those imports while the driver waits.

    ``torch._dynamo`` (1.4 s of CPU here) only for a user's own loop (``trainable:``): it most
    likely steps a torch.optim optimizer, which imports it at its first step; hpo's own
    optimizers step without it (``hpo.trial.optimizers``).
    """
    own_loop = ["torch._dynamo"] if study is not None and study.trainable is not None else []
    return _ray_private.warm_worker_config(
        ["torch", "ray.tune", "hpo.execution.round", "hpo.trial.train", *own_loop,
         "hpo.execution._warm_worker"])  # last: it says the worker is ready


#: The warm workers of a study of hpo's own loop.
WARM_WORKERS = _warm_workers(None)


@dataclass
class _WarmPool:
    """The warm workers of the Ray session this process started with WARM_WORKERS."""

    session: str
    started: int  # asked of Ray so far: one per CPU as it starts, then each prestart's
    used: set[bytes] = field(default_factory=set)  # given to a round; they end with its actors


_pool: _WarmPool | None = None


def start_ray(address: str | None, *, study: Spec | None = None) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS), else start Ray in-process, listening on
    127.0.0.1 only; True if we started it.

    On a cluster, the user's code of ``study`` travels to the workers in the job's runtime
    environment (``code_runtime_env``); a Ray on this machine imports it from its folder.
    """
    import ray

    global _pool
    quiet_libraries()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(
        logging_level=logging.ERROR, log_to_driver=False, configure_logging=True
    )
    check_reachable(address)
    try:
        if address:
            env = code_runtime_env(study) if study is not None else None
            try:
                ray.init(address=address, **({"runtime_env": env} if env else {}), **kwargs)
            finally:  # Ray has uploaded it by now
                if env and Path(env["working_dir"]).name.startswith(CODE_PREFIX):
                    shutil.rmtree(env["working_dir"], ignore_errors=True)
        else:  # this machine's alone: on the loopback address, only what a study uses
            with _ray_private.loopback_node(), _ray_private.lean_node():
                ray.init(_node_ip_address=LOOPBACK, include_dashboard=False,
                         _system_config=_warm_workers(study), **kwargs)  # Ray adds to it
            _pool = _WarmPool(_ray_private.session_name(),
                              int(ray.cluster_resources().get("CPU", 0)))
    except ConnectionError as exc:
        raise RunError(_connect_error(address, exc)) from None
    return not address


class RayStart:
    """``start_ray`` for a Ray on this machine, on a thread of its own, while the caller goes on.

    ``ray.init`` mostly waits for Ray's processes to start, and the warm workers they start
    import torch on the second core; meanwhile the driver imports torch and loads the data on
    the first. The thread lives until ``close``: Ray's processes die with the thread that
    started them (Linux's parent-death signal), so it ends only once Ray is shut down. From the
    moment ``ray.init`` is done until the caller ``take``s Ray and installs its signal handlers
    again (``hpo.execution.interrupt``), SIGTERM aborts the process by Ray's fatal-signal
    handler: a study takes it before it writes its run or journal (by then it holds its lock and
    has opened its store and experiment).
    """

    def __init__(self, study: Spec) -> None:
        self._done, self._closed = threading.Event(), threading.Event()
        self._started = False
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(study,), name="hpo-ray-start",
                         daemon=True).start()

    def _run(self, study: Spec) -> None:
        try:
            self._started = start_ray(None, study=study)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by take()
            self._error = exc
        finally:
            self._done.set()
        self._closed.wait()

    def take(self) -> bool:
        """Wait for Ray, and take it over: True if it was started here (the caller shuts it
        down from then on). Raises what ``start_ray`` raised."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        started, self._started = self._started, False
        return started

    def close(self) -> None:
        """Once the caller is done with Ray (it shut down what it took): shut down a Ray
        started here and never taken, and let the thread end."""
        self._done.wait()
        try:
            if self._started:
                import ray

                self._started = False
                ray.shutdown()
        finally:
            self._closed.set()


def disconnect_local_ray() -> Callable[[], None]:
    """Shut down the Ray this process started on this machine, all but its processes, and
    return what stops those (~1.1 s here), for a thread of the caller's to run while it goes
    on. The core worker shuts down here, on the caller's thread: ``ray.shutdown`` on a thread of
    its own let the caller free an ObjectRef or actor handle meanwhile, and that ended the
    process (``_ray_private`` touch 16)."""
    return _ray_private.shutdown_driver_first()


def start_ray_soon(address: str | None, study: Spec) -> RayStart | None:
    """Start Ray on this machine while the caller goes on (``RayStart``); None where
    ``start_ray`` would connect to a cluster (``address`` or RAY_ADDRESS) or a Ray runs
    already: those are left to ``start_ray`` itself."""
    if address or os.environ.get("RAY_ADDRESS"):
        return None
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return None
    return RayStart(study)


#: The only address a Ray that hpo starts listens on: nothing of it is reachable from the network.
LOOPBACK = "127.0.0.1"
#: How long a cluster's head has to accept a connection: ray.init itself retries for minutes.
CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str | None, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, naming the address, when a cluster's ``host:port`` (``address``, else
    RAY_ADDRESS) accepts no connection: Ray would retry for long with warnings about another
    address. Imports no Ray, so it runs before anything of the study is written.

    ``auto``, ``local`` and client addresses (``ray://...``) are left to Ray: they are no
    address of the cluster's head to try here.
    """
    given, source = "--address", ""
    if not address:
        address = os.environ.get("RAY_ADDRESS") or None
        given, source = "RAY_ADDRESS", " (from RAY_ADDRESS)"
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [IPv6]:port
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"{given} {address!r}: not a Ray cluster address (allowed: "
                         f"host:port of the cluster's head, e.g. 10.0.0.5:6379; auto; local; "
                         f"ray://host:port for Ray Client)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise RunError(f"cannot reach the Ray cluster at {address!r}{source}: {reason} (tried "
                       f"for up to {timeout:g} s); check the address, and that the cluster's "
                       f"head node runs (`ray status` on it)") from None


#: The most of the user's code a study ships to a cluster (Ray's own limit is 500 MiB): past
#: it, the study folder holds more than code, and ``code:`` should name what to ship.
CODE_LIMIT_BYTES = 64 * 2**20
#: The temporary folder a ``code:`` list is gathered in, removed once Ray has uploaded it.
CODE_PREFIX = "hpo-code-"
#: Never shipped: what a study leaves behind and what no worker imports.
CODE_EXCLUDES = ("hpo_runs", "mlruns", "mlflow.db", "*.db", ".git", ".venv", "__pycache__",
                 "*.pyc", "*.ckpt", "*.pt")


def code_runtime_env(study: Spec) -> dict[str, Any] | None:
    """Ray's runtime environment that brings the user's code to a cluster's workers: the
    study file's folder as their working directory, or, with ``code:``, a folder holding just
    those files and folders. None when the study runs no code of the user's."""
    if not study.own_code:
        return None
    base = study.folder or Path.cwd()
    folder = _code_folder(base, study.code) if study.code else base
    size = _code_size(folder)
    if size > CODE_LIMIT_BYTES:
        if folder != base:  # the code: folder gathered above
            shutil.rmtree(folder, ignore_errors=True)
        raise InputError(
            f"code: {base} holds {size / 2**20:.0f} MiB to send to the cluster's workers (at "
            f"most {CODE_LIMIT_BYTES / 2**20:.0f} MiB): list the files and folders of your "
            f"code under `code:` in the study file, or move the data elsewhere")
    return {"working_dir": str(folder), "excludes": list(CODE_EXCLUDES)}


def _code_folder(base: Path, paths: tuple[str, ...]) -> Path:
    """A temporary folder with copies of ``paths`` (relative to ``base``) where they stand
    relative to it, so a worker imports ``lib.train`` for ``lib/train.py`` as it would from the
    study file's folder; a path outside ``base`` goes to the top by its name."""
    folder = Path(tempfile.mkdtemp(prefix=CODE_PREFIX))
    for path in paths:
        source, relative = base / path, Path(path)
        inside = not relative.is_absolute() and ".." not in relative.parts
        target = folder / (relative if inside else source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(*CODE_EXCLUDES),
                            dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    return folder


def _code_size(folder: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in CODE_EXCLUDES)]
        total += sum((Path(root) / f).stat().st_size for f in files
                     if not any(fnmatch.fnmatch(f, p) for p in CODE_EXCLUDES))
    return total


def _warm_pool() -> _WarmPool | None:
    """The warm workers, if Ray runs and is the session this process started."""
    import ray

    if _pool is not None and ray.is_initialized() and _ray_private.session_name() == _pool.session:
        return _pool
    return None


def warm_pool_started() -> bool:
    """Whether Ray runs the session this process started (its resources are fixed); a
    cluster's may grow while a round runs."""
    return _warm_pool() is not None


def _warm_count(spec: Spec) -> int:
    import ray

    return min(concurrent_trials(spec), int(ray.cluster_resources().get("CPU", 1)))


def _ready_workers() -> set[bytes]:
    from hpo.execution._warm_worker import NAMESPACE, PREFIX

    return _ray_private.kv_keys(PREFIX, namespace=NAMESPACE)


def await_warm_workers(spec: Spec, *, timeout: float = 60.0) -> float:
    """Wait until as many warm workers as the next round runs trials at once are ready (or
    ``timeout`` passes); the seconds waited. Only for a Ray this process started.

    A round must not start while some are still importing torch: their trials would wait for
    them (``_ray_private.keep_starting_actors``) while the first trials ran.
    """
    pool = _warm_pool()
    if pool is None:
        return 0.0
    count, start = min(_warm_count(spec), pool.started - len(pool.used)), time.monotonic()
    while len(_ready_workers() - pool.used) < count and time.monotonic() - start < timeout:
        time.sleep(0.05)
    pool.used.update(_ready_workers())
    return time.monotonic() - start


def prestart_warm_workers(spec: Spec) -> bool:
    """Have Ray start the next round's warm workers now, so that they import torch while this
    round's results are written and its ranges refined (this round's workers end with its
    actors). Only for a Ray this process started; True if Ray took the request.

    Ray starts warm workers by itself only once, as it starts; its raylet's PrestartWorkers
    call (which Ray's core worker uses) starts more for this job and keeps them for up to ten
    minutes until an actor takes them.
    """
    pool = _warm_pool()
    if pool is None:
        return False
    count = _warm_count(spec)
    try:
        _ray_private.start_workers(count)
    except Exception:  # noqa: BLE001 - without them the next round starts its own, colder
        return False
    pool.started += count
    return True


def _connect_error(address: str | None, exc: Exception) -> str:
    if "No node info found" in str(exc.__cause__):  # GCS reached, but no Ray node runs here
        return (f"cannot drive the Ray cluster at {address!r} from this machine: a Ray driver "
                f"needs a Ray node where it runs. Join the cluster without resources first, "
                f"`ray start --address {address} --num-cpus 0 --num-gpus 0`, or run hpo on "
                f"one of its nodes")
    # A wrong or missing token looks the same from here (Ray only logs the reason).
    return (f"cannot reach the Ray cluster at {address!r}: {exc} (check the address; with token "
            f"authentication, RAY_AUTH_MODE=token and RAY_AUTH_TOKEN must hold its token)")


def concurrent_trials(spec: Spec) -> int:
    """How many of the study's trials the Ray cluster runs at once, as it is now."""
    import ray

    s = spec.search
    total = ray.cluster_resources()
    fits = [total.get(kind.upper(), 0.0) / need
            for kind, need in s.resources_per_trial.items() if need > 0]
    slots = max(1, int(min(fits))) if fits else 1
    return min(slots, s.max_concurrent_trials or slots)
