"""One round on Ray Tune: Optuna's seeded sampler over the round's ranges, a scheduler, resources.

The driver owns everything stateful (MLflow, the progress line); trials only train and report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpo.data import Dataset
from hpo.errors import InputError, RunError
from hpo.space import Categorical, Distribution, Float, Int
from hpo.spec import Spec

__all__ = ["EpochReports", "await_warm_workers", "decode", "optuna_space",
           "prestart_warm_workers", "round_seed", "run_round", "start_ray"]

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


#: What a Ray that hpo starts on this machine does as it starts: one worker process per CPU,
#: each importing torch and hpo's trainer before any trial asks for one, and ``torch._dynamo``,
#: which torch imports when the first optimizer is made (1.7 s here). A round's trial actors land
#: in those processes (see ``_tune_for_short_trials``), so its first trials do not pay for a
#: process and those imports while the driver waits.
WARM_WORKERS = {"preload_python_modules": ["torch", "torch._dynamo", "ray.tune", "hpo.tune",
                                           "hpo.trainable", "hpo._warm_worker"],
                # Ray kills a worker idle for more than a second (its default) when the first
                # actor asks for one, and starts a cold one instead.
                "idle_worker_killing_time_threshold_ms": 300_000}


@dataclass
class _WarmPool:
    """The warm workers of the Ray session this process started with WARM_WORKERS."""

    session: str
    started: int  # asked of Ray so far: one per CPU as it starts, then each prestart's
    used: set[bytes] = field(default_factory=set)  # given to a round; they end with its actors


_pool: _WarmPool | None = None


def _session() -> str:
    import ray

    return ray._private.worker.global_worker.node.session_name


def start_ray(address: str | None) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS), else start Ray in-process; True if we started it."""
    import ray

    global _pool
    quiet_libraries()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(
        logging_level=logging.ERROR, log_to_driver=False, configure_logging=True
    )
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(include_dashboard=False, _system_config=WARM_WORKERS, **kwargs)
            _pool = _WarmPool(_session(), int(ray.cluster_resources().get("CPU", 0)))
    except ConnectionError as exc:
        raise RunError(_connect_error(address, exc)) from None
    return not address


def _warm_pool() -> _WarmPool | None:
    """The warm workers, if Ray runs and is the session this process started."""
    import ray

    if _pool is not None and ray.is_initialized() and _session() == _pool.session:
        return _pool
    return None


def _warm_count(spec: Spec) -> int:
    import ray

    return min(concurrent_trials(spec), int(ray.cluster_resources().get("CPU", 1)))


def _ready_workers() -> set[bytes]:
    from ray.experimental import internal_kv

    from hpo._warm_worker import NAMESPACE, PREFIX

    return set(internal_kv._internal_kv_list(PREFIX, namespace=NAMESPACE))


def await_warm_workers(spec: Spec, *, timeout: float = 60.0) -> float:
    """Wait until as many warm workers as the next round runs trials at once are ready (or
    ``timeout`` passes); the seconds waited. Only for a Ray this process started.

    A round must not start while some are still importing torch: Tune would hand the trials
    of the slow ones to the first actor to finish a short trial, and drop the slow ones, so the
    round would run on fewer workers.
    """
    import time

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
        import ray
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

        node = ray._private.worker.global_worker.node
        channel = init_grpc_channel(f"{node.node_ip_address}:{node.node_manager_port}")
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(
            node_manager_pb2.PrestartWorkersRequest(
                language=common_pb2.PYTHON,
                job_id=bytes.fromhex(ray.get_runtime_context().get_job_id()),
                keep_alive_duration_secs=600, num_workers=count),
            timeout=10)
        channel.close()
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


def round_seed(seed: int, round_index: int) -> int:
    """The sampler seed of round k: same study seed, same rounds."""
    return int(np.random.SeedSequence([seed, round_index]).generate_state(1)[0])


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _key(value: Any) -> str:
    import yaml

    return yaml.safe_dump(list(value) if isinstance(value, tuple) else value,
                          default_flow_style=True).strip()


def optuna_space(ranges: Mapping[str, Distribution]) -> dict[str, Any]:
    """Our distributions as Optuna's; log ranges stay log. Non-scalar choices become strings."""
    import optuna.distributions as od

    out: dict[str, Any] = {}
    for name, dist in ranges.items():
        if isinstance(dist, Int):
            out[name] = od.IntDistribution(int(dist.low), int(dist.high), log=dist.log)
        elif isinstance(dist, Float):
            out[name] = od.FloatDistribution(dist.low, dist.high, log=dist.log)
        elif isinstance(dist, Categorical):
            choices = [c if _is_plain(c) else _key(c) for c in dist.choices]
            out[name] = od.CategoricalDistribution(choices)
        else:  # pragma: no cover - the spec admits no other kind
            raise TypeError(f"unsupported distribution {dist!r}")
    return out


def encode(ranges: Mapping[str, Distribution], values: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled values in Optuna's terms (lists as the strings optuna_space uses): decode's
    inverse."""
    return {n: _key(values[n]) if isinstance(d, Categorical) and not _is_plain(values[n])
            else values[n] for n, d in ranges.items()}


def decode(ranges: Mapping[str, Distribution], config: Mapping[str, Any]) -> dict[str, Any]:
    """A sampled config back in our terms (string-encoded choices back to lists)."""
    out = {}
    for name, dist in ranges.items():
        value = config[name]
        if isinstance(dist, Categorical) and isinstance(value, str):
            lookup = {_key(c): c for c in dist.choices if not _is_plain(c)}
            value = lookup.get(value, value)
        out[name] = value
    return out


def make_sampler(kind: str, seed: int, trials: int):
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                              warn_independent_sampling=False)
    if kind == "tpe":
        # A third of the round (at most 10) is random start-up before TPE models the results.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3)))
    raise InputError(f"search.sampler: unknown sampler {kind!r} (allowed: random | qmc | tpe)")


#: With no scheduler reading intermediate results (FIFO), a trial sends its epochs to the driver
#: at most this often, and when it ends: every report waits for a round trip through the driver.
REPORT_INTERVAL_S = 2.0


class EpochReports:
    """A trial's per-epoch metrics on their way to Ray Tune.

    Each report carries ``epochs``, the list of epoch metrics since the previous one, plus, at
    the top level, ``extra`` and the last epoch's values of the ``top`` keys: what schedulers
    and searchers read. Only those: Tune keeps running statistics of every top-level number of
    every trial for the whole run, which for a study's dozens of diagnostics would cost the
    driver tens of kilobytes per trial. With ``every_epoch`` (a scheduler such as ASHA decides
    after each epoch), every epoch is reported as it ends; otherwise epochs are gathered for
    ``interval`` seconds, so a trial of short epochs costs the driver one round trip, not one
    per epoch. ``flush()`` at the end.
    """

    def __init__(self, send: Any, *, every_epoch: bool, top: Sequence[str],
                 extra: Mapping[str, Any] = (), interval: float = REPORT_INTERVAL_S) -> None:
        import time

        self._send, self._clock, self.top = send, time.monotonic, tuple(top)
        self.every_epoch, self.interval, self.extra = every_epoch, interval, dict(extra)
        self._pending: list[dict[str, Any]] = []
        self._last = self._clock()

    def __call__(self, metrics: Mapping[str, Any]) -> None:
        self._pending.append(dict(metrics))
        if self.every_epoch or self._clock() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        epochs, self._pending = self._pending, []
        last = epochs[-1]
        self._send({**{k: last[k] for k in self.top if k in last}, **self.extra,
                    "epochs": epochs})
        self._last = self._clock()


def _epoch_reports(spec: Spec, top: Sequence[str]) -> EpochReports:
    """A trial's reports to Tune, tagged with the node it runs on (the run's hpo.node tag)."""
    import ray
    from ray import tune

    return EpochReports(tune.report, every_epoch=spec.search.scheduler != "fifo", top=top,
                        extra={"node": ray.get_runtime_context().get_node_id()})


def _trainable(config: dict[str, Any], *, data: Dataset, spec: Spec,
               ranges: Mapping[str, Distribution], threads: int) -> None:
    import ray
    import torch

    from hpo.trainable import train_trial, trial_device

    torch.set_num_threads(threads)
    params = spec.resolve(decode(ranges, config))
    report = _epoch_reports(spec, top=(spec.search.metric, "epoch"))
    try:
        train_trial(params, data, seed=spec.seed, report=report,
                    device=trial_device(bool(ray.get_gpu_ids())))
    finally:  # a trial that raises still leaves the epochs it finished
        report.flush()


def _packed_trainable(config: dict[str, Any], *, data: Dataset, spec: Spec,
                      ranges: Mapping[str, Distribution], threads: int) -> None:
    """A Ray trial that trains a pack: each epoch is one flat dict, ``m<i>/<metric>`` per
    member, and the best member's value under the metric's own name (what the scheduler
    reads), reported as ``EpochReports`` says."""
    import ray
    import torch

    from hpo._pack_search import PACK_KEY, member_key
    from hpo.packing import train_pack
    from hpo.trainable import trial_device

    torch.set_num_threads(threads)
    members = [spec.resolve(decode(ranges, m)) for m in config[PACK_KEY]]
    metric, pick = spec.search.metric, max if spec.search.resolved_mode == "max" else min
    reports = _epoch_reports(spec, top=(metric, "epoch", *(member_key(i, metric)
                                                           for i in range(len(members)))))

    def report(per_member: list[dict[str, float] | None]) -> None:
        flat: dict[str, Any] = {}
        for i, metrics in enumerate(per_member):
            if metrics is not None:
                flat.update({member_key(i, k): v for k, v in metrics.items()})
                flat["epoch"] = metrics["epoch"]
        flat[metric] = pick(m[metric] for m in per_member if m is not None)
        reports(flat)

    try:
        train_pack(members, data, seed=spec.seed, report=report,
                   device=trial_device(bool(ray.get_gpu_ids())))
    finally:
        reports.flush()


def pack_size(spec: Spec, num_trials: int) -> int:
    """Members per Ray trial for this study: 1 where packing does not apply."""
    from hpo.packing import packable

    pack = spec.search.pack
    if pack == "auto":
        pack = 64 if spec.search.resources_per_trial["gpu"] > 0 else 8
    if not packable(spec.fixed()) or isinstance(spec.distributions().get("arch"), Categorical):
        return 1
    return max(1, min(int(pack), num_trials))


def run_round(
    spec: Spec,
    ranges: Mapping[str, Distribution],
    *,
    round_index: int,
    num_trials: int,
    data_ref: Any,
    storage: Path,
    callbacks: Sequence[Any] = (),
    done: Sequence[tuple[Mapping[str, Any], float | None]] = (),
    rerun: Sequence[Mapping[str, Any]] = (),
    attempt: int = 0,
) -> None:
    """Run one round of ``num_trials`` trials; the callbacks see every trial event.

    Continuing an interrupted round (``attempt`` > 0, from the study journal): ``done`` are its
    finished trials (sampled values, metric or None for a failure), which the searcher learns
    from without running them; ``rerun`` are the ones the interruption cut short, which run
    first with the same values; the rest of ``num_trials`` is sampled with a fresh seed.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    s = spec.search
    mode = s.resolved_mode
    quiet_libraries()
    pack = pack_size(spec, num_trials) if ranges else 1
    seed = round_seed(spec.seed, round_index) if not attempt else int(
        np.random.SeedSequence([spec.seed, round_index, attempt]).generate_state(1)[0])
    sampler = make_sampler(s.sampler, seed, num_trials)
    if pack > 1:
        from hpo._pack_search import PackedOptunaSearch

        searcher: Any = PackedOptunaSearch(space=optuna_space(ranges), metric=s.metric,
                                           mode=mode, sampler=sampler, pack=pack,
                                           total=num_trials)
        samples = -(-num_trials // pack)  # ceil: the last pack may be smaller
    else:
        searcher = OptunaSearch(space=optuna_space(ranges), metric=s.metric, mode=mode,
                                sampler=sampler,
                                points_to_evaluate=[encode(ranges, c) for c in rerun] or None,
                                ) if ranges else None
        samples = num_trials
    for config, value in done if searcher is not None else ():
        searcher.add_evaluated_point(encode(ranges, config), value, error=value is None)
    if s.scheduler == "asha":
        epochs = spec.train["epochs"]
        max_t = int(epochs.high) if isinstance(epochs, Int) else int(epochs)
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                  grace_period=max(1, max_t // 8), reduction_factor=3)
    else:
        scheduler = FIFOScheduler()
    cpu = s.resources_per_trial["cpu"]
    # A Ray this process started keeps the resources it started with; a cluster may grow.
    fixed, slots = _warm_pool() is not None, concurrent_trials(spec)
    trainable = tune.with_resources(
        tune.with_parameters(_packed_trainable if pack > 1 else _trainable,
                             data=data_ref, spec=spec, ranges=dict(ranges),
                             threads=max(1, int(cpu))),
        {"cpu": cpu, "gpu": s.resources_per_trial["gpu"]},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=s.metric, mode=mode, search_alg=searcher, scheduler=scheduler,
            # On this machine, at most as many live trials as fit: a finished trial's actor
            # takes the next one at once, and no trial waits on an actor of its own that Tune
            # would then discard. A cluster's rounds also use the nodes that join while they run.
            num_samples=samples,
            max_concurrent_trials=slots if fixed else s.max_concurrent_trials,
            reuse_actors=True, trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=f"round-{round_index}" + (f"-resume{attempt}" if attempt else ""),
            storage_path=str(storage.resolve()),
            verbose=0,
            callbacks=list(callbacks),
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    with _tune_for_short_trials(pending=None if fixed else slots):
        tuner.fit()  # results reach the driver through the callbacks, as they happen


def concurrent_trials(spec: Spec) -> int:
    """How many of the study's trials the Ray cluster runs at once, as it is now."""
    import ray

    s = spec.search
    total = ray.cluster_resources()
    fits = [total.get(kind.upper(), 0.0) / need
            for kind, need in s.resources_per_trial.items() if need > 0]
    slots = max(1, int(min(fits))) if fits else 1
    return min(slots, s.max_concurrent_trials or slots)


#: Tune's period for saving a run's state while hpo runs it: a year, so only as the round ends.
CHECKPOINT_NEVER_S = 365 * 24 * 3600


@contextlib.contextmanager
def _tune_for_short_trials(pending: int | None = None) -> Iterator[None]:
    """Tune's habits that cost short trials, set aside while a round runs (and restored after).

    * With ``pending`` (a round that sets no limit of live trials, on a cluster): Tune asks for
      one trial actor at a time when a searcher sets no limit. While the second actor starts,
      the first finishes a short trial, takes the second's trial, and Tune drops the starting
      actor: a round of short trials would never run two at once. Tune may ask for ``pending``
      actors at once (``TUNE_MAX_PENDING_TRIALS_PG``, unless set).
    * Tune gives its trial actors an environment variable for PyTorch Lightning, which hpo does
      not use. Ray only hands an actor a worker process started for the same environment, so
      with it no trial could use the warm workers of ``WARM_WORKERS``.
    * Tune looks its trainable up in Ray's key-value store (and unpickles it) two or three
      times per trial, each a round trip to Ray's GCS while the next trial waits. A round's
      trainable is registered once, as its Tuner is made; its lookups are kept for the round.
    * Every ten seconds or more Tune saves the state of the run's trials, as JSON it keeps in
      memory for each trial, to resume a run that stopped. hpo resumes from its own journal,
      so a round saves it as it ends (``TUNE_GLOBAL_CHECKPOINT_S``, unless set).
    """
    from ray.tune import registry
    from ray.tune.execution import class_cache

    env = dict(class_cache.DEFAULT_ENV_VARS)
    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)
    settings = {"TUNE_GLOBAL_CHECKPOINT_S": str(CHECKPOINT_NEVER_S)}
    if pending is not None:
        settings["TUNE_MAX_PENDING_TRIALS_PG"] = str(pending)
    ours = [name for name in settings if name not in os.environ]  # the user's stay theirs
    os.environ.update({name: settings[name] for name in ours})
    store, seen = registry._global_registry, {}

    def get(category: str, key: str, lookup=store.get) -> Any:
        if category != registry.TRAINABLE_CLASS:
            return lookup(category, key)
        if key not in seen:
            seen[key] = lookup(category, key)
        return seen[key]

    def contains(category: str, key: str, lookup=store.contains) -> bool:
        return category == registry.TRAINABLE_CLASS and key in seen or lookup(category, key)

    store.get, store.contains = get, contains  # on the instance: the class keeps Ray's
    try:
        yield
    finally:
        del store.get, store.contains
        for name in ours:
            os.environ.pop(name, None)
        class_cache.DEFAULT_ENV_VARS.clear()
        class_cache.DEFAULT_ENV_VARS.update(env)
