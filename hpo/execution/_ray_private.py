"""Every use of Ray's private or undocumented API, in one module.

hpo leans on Ray internals in a few places where the public API has no way to say what a
short-trial study needs. Each touch below says why, and what breaks on a Ray upgrade that moves
it; ``tests/execution/test_ray_private.py`` checks each touched attribute still exists in the
pinned Ray and fails naming the one that is gone. Nothing outside this module reaches into
``ray._private``, Ray's generated protobufs or Tune's internal registries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from hpo._swap import swapped

__all__ = ["TOUCHED", "in_worker_process", "keep_starting_actors", "kv_keys", "kv_put",
           "lean_node", "loopback_node", "memoized_trainable_lookups", "release_trial_state",
           "session_name", "shutdown_driver_first", "start_workers", "tune_actor_env",
           "warm_worker_config"]

#: Every private attribute this module touches, as (module, dotted attribute). The test imports
#: each module and walks each attribute, so a Ray upgrade that drops one fails by name.
TOUCHED: tuple[tuple[str, str], ...] = (
    ("ray._private.worker", "global_worker"),
    ("ray._private.worker", "WORKER_MODE"),
    ("ray._private.grpc_utils", "init_grpc_channel"),
    ("ray.core.generated.common_pb2", "PYTHON"),
    ("ray.core.generated.node_manager_pb2", "PrestartWorkersRequest"),
    ("ray.core.generated.node_manager_pb2_grpc", "NodeManagerServiceStub"),
    ("ray.experimental.internal_kv", "_internal_kv_put"),
    ("ray.experimental.internal_kv", "_internal_kv_list"),
    ("ray.tune.registry", "_global_registry"),
    ("ray.tune.registry", "TRAINABLE_CLASS"),
    ("ray.tune.execution.class_cache", "DEFAULT_ENV_VARS"),
    ("ray.tune.experiment.trial", "Trial.run_metadata"),
    ("ray._private.ray_constants", "ENABLE_RAY_CLUSTER"),
    ("ray.tune.execution.tune_controller", "TuneController._maybe_reuse_cached_actor"),
    ("ray._private.node", "Node.start_api_server"),
    ("ray._private.node", "Node.start_monitor"),
    ("ray._private.node", "Node.start_log_monitor"),
    ("ray._private.utils", "get_dashboard_dependency_error"),
    ("ray._private.worker", "_global_node"),
    ("ray._private.node", "Node.is_head"),
    ("ray._private.node", "Node.kill_all_processes"),
    ("ray._private.node", "Node.destroy_external_storage"),
)
#: Ray's internal system-config keys hpo sets on a Ray it starts (``ray.init(_system_config=)``).
SYSTEM_CONFIG_KEYS = ("preload_python_modules", "idle_worker_killing_time_threshold_ms")
#: What Tune's ``Trial.run_metadata`` must have for ``release_trial_state``.
RUN_METADATA_FIELDS = ("last_result", "metric_analysis", "metric_n_steps")


# 1. The Ray session's name: tells whether Ray still runs the session hpo started (its warm
#    workers belong to it). Breaks if the worker's node object or its session_name moves.
def session_name() -> str:
    from ray._private import worker

    return worker.global_worker.node.session_name


# 2. Whether this process is a Ray worker (not the driver): the warm-worker module announces
#    itself only in workers. Breaks if global_worker.mode or WORKER_MODE moves.
def in_worker_process() -> bool:
    from ray._private import worker

    return worker.global_worker.mode == worker.WORKER_MODE


# 3-4. Ray's internal key-value store, where warm workers say they are ready: no public API
#    lists keys by prefix. Breaks if the underscore functions of internal_kv are renamed.
def kv_put(key: str, value: bytes, *, namespace: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(key, value, namespace=namespace)


def kv_keys(prefix: str, *, namespace: str) -> set[bytes]:
    from ray.experimental import internal_kv

    return set(internal_kv._internal_kv_list(prefix, namespace=namespace))


# 5. Ray's system config for a Ray hpo starts: preload torch and the trial code in each worker
#    as it starts, and keep idle workers (Ray kills one idle for 1 s when the first actor asks
#    for a worker). Unknown keys make ray.init fail loudly on an upgrade that drops them.
def warm_worker_config(modules: list[str]) -> dict[str, Any]:
    preload, idle_ms = SYSTEM_CONFIG_KEYS
    return {preload: list(modules), idle_ms: 300_000}


# 6-9. The raylet's PrestartWorkers call (what Ray's core worker uses, not exposed in Python):
#    start ``count`` workers for this job, kept up to ``keep_alive_s`` until an actor takes one.
#    Breaks if the node manager's address fields, the gRPC helper or the protobufs move; the
#    caller treats any failure as "no prestart" (the next round starts colder).
def start_workers(count: int, *, keep_alive_s: int = 600, timeout_s: float = 10) -> None:
    import ray
    from ray._private import worker
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

    node = worker.global_worker.node
    channel = init_grpc_channel(f"{node.node_ip_address}:{node.node_manager_port}")
    try:
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(
            node_manager_pb2.PrestartWorkersRequest(
                language=common_pb2.PYTHON,
                job_id=bytes.fromhex(ray.get_runtime_context().get_job_id()),
                keep_alive_duration_secs=keep_alive_s, num_workers=count),
            timeout=timeout_s)
    finally:
        channel.close()


# 10. Tune gives its trial actors PL_DISABLE_FORK (for PyTorch Lightning, which hpo does not
#    use); Ray hands an actor only a worker started with the same environment, so with it no
#    trial could use the warm workers. Breaks if class_cache.DEFAULT_ENV_VARS moves.
@contextlib.contextmanager
def tune_actor_env() -> Iterator[None]:
    from ray.tune.execution import class_cache

    env = dict(class_cache.DEFAULT_ENV_VARS)
    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)
    try:
        yield
    finally:
        class_cache.DEFAULT_ENV_VARS.clear()
        class_cache.DEFAULT_ENV_VARS.update(env)


# 11. Tune looks its trainable up in Ray's key-value store (and unpickles it) two or three
#    times per trial, each a GCS round trip while the next trial waits: the round keeps its
#    lookups. Patched on the registry instance (its class keeps Ray's methods) and undone after.
#    Breaks if _global_registry or TRAINABLE_CLASS move, or get/contains are renamed.
@contextlib.contextmanager
def memoized_trainable_lookups() -> Iterator[None]:
    from ray.tune import registry

    store, seen = registry._global_registry, {}

    def get(category: str, key: str, lookup=store.get) -> Any:
        if category != registry.TRAINABLE_CLASS:
            return lookup(category, key)
        if key not in seen:
            seen[key] = lookup(category, key)
        return seen[key]

    def contains(category: str, key: str, lookup=store.contains) -> bool:
        return category == registry.TRAINABLE_CLASS and key in seen or lookup(category, key)

    store.get, store.contains = get, contains
    try:
        yield
    finally:
        del store.get, store.contains


# 12. What Tune keeps of a finished trial until the run ends: its last result (here every
#    epoch's metrics) and running statistics of every number it reported. hpo reads results
#    only through its callback, so they are dropped once the trial is journaled. Breaks if
#    Trial.run_metadata or these fields are renamed.
def release_trial_state(trial: Any) -> None:
    meta = trial.run_metadata
    meta.last_result = {k: v for k, v in meta.last_result.items() if k != "epochs"}
    meta.metric_analysis, meta.metric_n_steps = {}, {}


# 13. A Ray that hpo starts on this machine listens on the loopback address only. ray.init's
#    ``_node_ip_address="127.0.0.1"`` alone is rewritten to the machine's outward address
#    (``services.resolve_ip_for_localhost``), and the GCS, raylet and workers then listen on
#    every interface (``::``), open to anyone on the network. Ray keeps the loopback address
#    where it supports no clusters (``ray_constants.ENABLE_RAY_CLUSTER`` off, as on macOS); off
#    while ray.init starts the node, the node's address is 127.0.0.1 and each of its servers
#    binds to it. Breaks if the flag is renamed (then ray.init binds everywhere again: the
#    test of the started Ray's addresses fails).
@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    from ray._private import ray_constants

    with swapped(ray_constants, ENABLE_RAY_CLUSTER=False):
        yield


# 14. Tune gives a finished trial's actor (kept for reuse) to the first pending trial, even when
#    that trial's own actor already holds its resources and is starting: it stops the starting
#    actor, and its worker process with it. When trials are shorter than an actor's start, the
#    first actor then takes every trial of the round in turn and each new actor is stopped as
#    it starts: the round runs on one worker, and the warm workers are spent. While this is
#    on, a trial keeps an actor that has its resources; the kept actor takes the next trial that
#    has none. An actor still waiting for resources is replaced as before (the kept actor may
#    hold them). Breaks if TuneController's _maybe_reuse_cached_actor, _trial_to_actor,
#    _resetting_trials or _actor_manager.is_actor_started move.
@contextlib.contextmanager
def keep_starting_actors() -> Iterator[None]:
    from ray.tune.execution.tune_controller import TuneController

    reuse = TuneController._maybe_reuse_cached_actor

    def keeping(self: Any, trial: Any) -> bool:
        own = self._trial_to_actor.get(trial)
        if (own is not None and trial not in self._resetting_trials
                and self._actor_manager.is_actor_started(own)):
            return False
        return reuse(self, trial)

    with swapped(TuneController, _maybe_reuse_cached_actor=keeping):
        yield


# 15. A Ray that hpo starts on this machine starts only what a study uses. ray.init starts, besides
#    the GCS, the raylet and its agents:
#    * Ray's dashboard process, even with ``include_dashboard=False`` (then only its
#      usage-statistics module), and waits for it to answer before it starts the raylet: a
#      Python process importing Ray, 0.4-1.5 s on the way to the first warm worker here;
#    * the autoscaler's monitor (a Python process, ~0.4 s of CPU as it starts): a Ray of one
#      machine has nothing to scale;
#    * the log monitor (~0.4 s of CPU), which sends the workers' output to the drivers that ask
#      for it: hpo's ray.init asks for none (``log_to_driver=False``); the logs stay in the
#      session's files;
#    * the raylet's dashboard agent with every module of a dashboard, after the driver has
#      imported aiohttp and the rest of the dashboard's optional dependencies (~0.2 s) to see
#      whether they are installed. Without a dashboard the agent runs minimal, as where they are
#      not (``pip install ray``).
#    Together ~0.5 s less from the driver's start to its warm workers being ready here. While
#    this is on, a Ray that hpo starts has none of the first three and a minimal agent. Breaks
#    if Node.start_api_server, start_monitor or start_log_monitor, or
#    utils.get_dashboard_dependency_error, move (then that process starts again: only slower).
@contextlib.contextmanager
def lean_node() -> Iterator[None]:
    from ray._private import utils
    from ray._private.node import Node

    def start_api_server(self: Any, *, include_dashboard: Any, raise_on_failure: Any) -> None:
        self._webui_url = None

    def start_nothing(self: Any) -> None:
        pass

    def without_dashboard() -> ImportError:
        return ImportError("a Ray that hpo starts has no dashboard")

    with (swapped(Node, start_api_server=start_api_server, start_monitor=start_nothing,
                   start_log_monitor=start_nothing),
          swapped(utils, get_dashboard_dependency_error=without_dashboard)):
        yield


# 16. Stop a Ray this process started in two steps: the driver's connection now, on the caller's
#    thread (its core worker's shutdown: ~0.26 s here), and the node's processes later, by the
#    function returned (~1.1 s, which the caller runs on a thread of its own). ray.shutdown does
#    both; run whole on a thread of its own, it let the caller's thread free a Ray object (an
#    ObjectRef's or actor handle's __del__, a garbage collection) while the core worker shut
#    down, and the core worker then ended the process: exit code 1, no message from hpo. The
#    split holds while no other thread of the driver runs Python code as the core worker shuts
#    down (today the tracking writers are joined by then, and Ray stops its own GC thread
#    first); a thread that frees Ray objects there would bring the crash back. Breaks if
#    worker._global_node moves (then ray.shutdown stops the processes too, on the caller's
#    thread: only slower) or the three Node methods do (test_ray_private names them).
def shutdown_driver_first() -> Callable[[], None]:
    import ray
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    worker._global_node = None
    try:
        ray.shutdown()  # with no node of its own to stop: the driver's connection alone
    except BaseException:
        worker._global_node = node  # a later ray.shutdown stops its processes
        raise
    if node is None:
        return lambda: None

    def stop_processes() -> None:
        if node.is_head():
            node.destroy_external_storage()
        node.kill_all_processes(check_alive=False, allow_graceful=True)

    return stop_processes
