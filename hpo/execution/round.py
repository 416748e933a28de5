"""One round on Ray Tune: Optuna's seeded sampler over the round's ranges, a scheduler, resources.

The driver owns everything stateful (MLflow, the progress line); trials only train and report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import hpo.usercode as usercode
from hpo.config.spec import Spec
from hpo.data.dataset import Dataset
from hpo.errors import TrialContractError
from hpo.execution import _ray_private
from hpo.execution.cluster import concurrent_trials, quiet_libraries, warm_pool_started
from hpo.execution.interrupt import INTERRUPTS, RoundInterrupted
from hpo.space.bridge import decode, encode, make_sampler, optuna_space, round_seed
from hpo.space.distributions import Categorical, Distribution, Int
from hpo.trial.contract import Fit, Trial, TrialStopped

__all__ = ["EpochReports", "pack_size", "run_round", "trial_folder"]


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


def _trainable(config: dict[str, Any], *, data: Dataset | None, spec: Spec,
               ranges: Mapping[str, Distribution], threads: int, study_folder: Path,
               round_index: int, folder: Path | None = None) -> None:
    """A Ray trial: the study's ``fit(config, trial)`` (hpo's own loop, or the user's
    trainable) on the sampled configuration, its reports on their way to Tune."""
    import ray
    import torch

    from hpo.trial.train import trial_device

    torch.set_num_threads(threads)
    if spec.own_code:
        # A cluster's job brings the code (Ray's working_dir, on sys.path): that copy, even
        # where the study's folder is readable too. Else the study's folder, as the driver
        # resolved it: a trial runs in a folder of Tune's, where a relative path means another.
        shipped = bool(ray.get_runtime_context().runtime_env.get("working_dir"))
        usercode.search_path(None if shipped else folder)
    sampled = decode(ranges, config)
    params = spec.resolve(sampled)
    reports = _epoch_reports(spec, top=(spec.search.metric, "epoch"))
    trial = Trial(send=reports, seed=spec.seed, device=trial_device(bool(ray.get_gpu_ids())),
                  number=_trial_number(), data=data, metric=spec.search.metric,
                  direction=spec.search.resolved_mode,
                  checkpoint_dir=trial_folder(study_folder, round_index, sampled))
    try:
        study_fit(spec)(params, trial)
    except TrialStopped:  # diverged, or the scheduler ended the trial at a report
        pass
    finally:  # a trial that raises still leaves the epochs it finished
        reports.flush()
    if not trial.reported(spec.search.metric):
        seen = sorted({k for r in trial.reports for k in r})
        raise TrialContractError(
            f"the trial never reported search.metric {spec.search.metric!r}; it reported "
            f"{', '.join(seen) if seen else 'nothing'} (call trial.report(epoch=k, "
            f"{spec.search.metric}=...) once per epoch)")


def study_fit(spec: Spec) -> Fit:
    """What each trial of ``spec`` runs: the user's trainable, else hpo's own loop."""
    if spec.trainable is None:
        from hpo.trial.train import fit

        return fit
    return usercode.load(spec.trainable, field="trainable")


def _trial_number() -> int | None:
    """The trial's number in its round, from Tune's trial name (``..._00003``), where it has
    one."""
    from ray import tune

    try:
        tail = tune.get_context().get_trial_name().rsplit("_", 1)[-1]
    except Exception:  # noqa: BLE001 - outside a Tune trial: no number
        return None
    return int(tail) + 1 if tail.isdigit() else None


def trial_folder(study_folder: Path, round_index: int, sampled: Mapping[str, Any]) -> Path:
    """A trial's own folder (``Trial.checkpoint_dir``), absolute (a trial runs in a folder of
    Tune's): the same sampled values in the same round (a trial run again after an
    interruption) find the same folder."""
    text = json.dumps({k: repr(v) for k, v in sorted(sampled.items())})
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Path(study_folder).resolve() / "checkpoints" / f"round-{round_index}" / key


def _packed_trainable(config: dict[str, Any], *, data: Dataset, spec: Spec,
                      ranges: Mapping[str, Distribution], threads: int) -> None:
    """A Ray trial that trains a pack: each epoch is one flat dict, ``m<i>/<metric>`` per
    member, and the best member's value under the metric's own name (what the scheduler
    reads), reported as ``EpochReports`` says."""
    import ray
    import torch

    from hpo.execution.packed_search import PACK_KEY, member_key
    from hpo.trial.pack import train_pack
    from hpo.trial.train import trial_device

    torch.set_num_threads(threads)
    members = [spec.resolve(decode(ranges, m)) for m in config[PACK_KEY]]
    metric, direction = spec.search.metric, spec.search.resolved_mode
    reports = _epoch_reports(spec, top=(metric, "epoch", *(member_key(i, metric)
                                                           for i in range(len(members)))))

    def report(per_member: list[dict[str, float] | None]) -> None:
        flat: dict[str, Any] = {}
        for i, metrics in enumerate(per_member):
            if metrics is not None:
                flat.update({member_key(i, k): v for k, v in metrics.items()})
                flat["epoch"] = metrics["epoch"]
        flat[metric] = direction.best(m[metric] for m in per_member if m is not None)
        reports(flat)

    try:
        train_pack(members, data, seed=spec.seed, report=report,
                   device=trial_device(bool(ray.get_gpu_ids())))
    finally:
        reports.flush()


def pack_size(spec: Spec, num_trials: int) -> int:
    """Members per Ray trial for this study: 1 where packing does not apply."""
    from hpo.trial.pack import packable

    if spec.trainable is not None:  # a loop of the user's trains one configuration at a time
        return 1
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
    asked: Sequence[bool] = (),
    round_trials: int | None = None,
) -> None:
    """Run one round of ``num_trials`` trials; the callbacks see every trial event.

    Continuing an interrupted round (``attempt`` > 0, from the study journal): ``done`` are its
    finished trials (sampled values, metric or None for a failure), which the searcher learns
    from without running them; ``rerun`` are the ones the interruption cut short, which run
    first with the same values. ``asked`` says, for each trial the round had sampled before
    (in sampling order), whether the journal holds it: the sampler, seeded as the round first
    was, samples them again unseen (the ones the journal lacks run again), so the rest of
    ``num_trials`` are the samples an uninterrupted round would have drawn. ``round_trials``:
    the whole round's budget, which the sampler is made for.
    """
    from ray import tune

    s = spec.search
    quiet_libraries()
    pack = pack_size(spec, num_trials) if ranges else 1
    searcher, samples = _searcher(spec, ranges, pack=pack, num_trials=num_trials,
                                  # packs are not sampled again (their cut members are
                                  # dropped): a seed of the continuation's own, not the
                                  # first packs' samples once more
                                  seed=round_seed(spec.seed, round_index,
                                                  attempt if pack > 1 else 0), done=done,
                                  rerun=rerun, asked=asked,
                                  round_trials=round_trials or num_trials)
    cpu = s.resources_per_trial["cpu"]
    # A Ray this process started keeps the resources it started with; a cluster may grow.
    fixed, slots = warm_pool_started(), concurrent_trials(spec)
    trainable = tune.with_resources(
        tune.with_parameters(_packed_trainable if pack > 1 else _trainable,
                             data=data_ref, spec=spec, ranges=dict(ranges),
                             threads=max(1, int(cpu)),
                             **({} if pack > 1 else {"study_folder": storage.parent.resolve(),
                                                     "round_index": round_index,
                                                     "folder": spec.folder})),
        {"cpu": cpu, "gpu": s.resources_per_trial["gpu"]},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=s.metric, mode=s.resolved_mode.value, search_alg=searcher,
            scheduler=_scheduler(spec),
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
    with _tune_for_short_trials(pending=None if fixed else slots), INTERRUPTS.deferred():
        try:
            tuner.fit()  # results reach the driver through the callbacks, as they happen
        except RoundInterrupted:
            pass  # Tune stopped its trials; the signal is raised as the deferred block ends


def _searcher(spec: Spec, ranges: Mapping[str, Distribution], *, pack: int, num_trials: int,
              seed: int, done: Sequence[tuple[Mapping[str, Any], float | None]],
              rerun: Sequence[Mapping[str, Any]], asked: Sequence[bool] = (),
              round_trials: int | None = None) -> tuple[Any, int]:
    """Optuna's seeded sampler behind Tune's searcher (one config per trial, or a pack of
    them); (searcher or None for a round with nothing to search, Ray trials to run)."""
    from ray.tune.search.optuna import OptunaSearch

    s = spec.search
    mode = s.resolved_mode.value  # Ray reads a plain "max" | "min"
    sampler = make_sampler(s.sampler, seed, round_trials or num_trials)
    if pack > 1:
        from hpo.execution.packed_search import PackedOptunaSearch

        searcher: Any = PackedOptunaSearch(space=optuna_space(ranges), metric=s.metric,
                                           mode=mode, sampler=sampler, pack=pack,
                                           total=num_trials)
        samples = -(-num_trials // pack)  # ceil: the last pack may be smaller
    else:
        searcher = OptunaSearch(space=optuna_space(ranges), metric=s.metric, mode=mode,
                                sampler=sampler) if ranges else None
        if searcher is not None:
            unseen = _replay(searcher, asked)
            # cut short, or sampled and never started: first, with the same values
            for config in [*(encode(ranges, c) for c in rerun), *unseen]:
                searcher._ot_study.enqueue_trial(config)
        samples = num_trials
    for config, value in done if searcher is not None else ():
        searcher.add_evaluated_point(encode(ranges, config), value, error=value is None)
    return searcher, samples


def _replay(searcher: Any, asked: Sequence[bool]) -> list[dict[str, Any]]:
    """Sample the round's earlier trials again, as Tune's OptunaSearch asks for them (Ray's
    private ``_ot_study``, ``_space``), so the sampler's state (its random stream, QMC's
    position) is where an uninterrupted round had it; they are told failed, so that only the
    journal's results (``add_evaluated_point``) teach the searcher. The configurations of
    those the journal lacks (``asked[i]`` false) come back, to be run."""
    import optuna

    study = searcher._ot_study
    trials = [study.ask(fixed_distributions=searcher._space) for _ in asked]
    for trial in trials:  # told after all are asked: QMC reads running trials' search space
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return [dict(t.params) for t, known in zip(trials, asked) if not known]


def _scheduler(spec: Spec) -> Any:
    """FIFO, or ASHA stopping trials early on the epoch count (``training_iteration``)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.search.scheduler != "asha":
        return FIFOScheduler()
    epochs = spec.train["epochs"]
    max_t = int(epochs.high) if isinstance(epochs, Int) else int(epochs)
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                         grace_period=max(1, max_t // 8), reduction_factor=3)


#: Tune's period for saving a run's state while hpo runs it: a year, so only as the round ends.
CHECKPOINT_NEVER_S = 365 * 24 * 3600


@contextlib.contextmanager
def _tune_for_short_trials(pending: int | None = None) -> Iterator[None]:
    """Tune's habits that cost short trials, set aside while a round runs (and restored after).

    * Tune gives a finished trial's actor to the first pending trial even when that trial's
      own actor is starting, and stops the starting one: with trials shorter than an actor's
      start, a round would run on one worker and spend the warm ones. A trial keeps an actor
      that holds its resources; the finished trial's actor takes the next trial.
    * With ``pending`` (a round that sets no limit of live trials, on a cluster): Tune asks for
      one trial actor at a time when a searcher sets no limit, so the next trial, and its
      actor, come only once the last one's actor has started. Tune may ask for ``pending``
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
    settings = {"TUNE_GLOBAL_CHECKPOINT_S": str(CHECKPOINT_NEVER_S)}
    # Tune's own SIGINT handler would end the round early, as if it were done: hpo's
    # (hpo.execution.interrupt) stops the study instead. Not the user's to keep.
    os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
    settings["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if pending is not None:
        settings["TUNE_MAX_PENDING_TRIALS_PG"] = str(pending)
    ours = [name for name in settings if name not in os.environ]  # the user's stay theirs
    os.environ.update({name: settings[name] for name in ours})
    try:
        with _ray_private.tune_actor_env(), _ray_private.memoized_trainable_lookups(), \
                _ray_private.keep_starting_actors():
            yield
    finally:
        for name in ours:
            os.environ.pop(name, None)
