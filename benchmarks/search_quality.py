"""Search quality on LCBench: normalized regret of search strategies at equal budgets in epochs.

    python benchmarks/search_quality.py [--quick] [--seeds 0 1 ...] [--no-real] [--variants]

The landscape is YAHPO Gym's LCBench surrogate (``benchmarks/lcbench.py``; real MLP training
runs, 52 epochs each) on OpenML tasks 3945, 167168 and 189873. A budget is counted in epochs:
``B`` full-run equivalents are ``B * 52`` epochs, whether spent on full runs or on runs stopped
early. Strategies, each seeded, each on two spaces (the benchmark's ranges; a wrong first range,
``lcbench.WRONG_RANGES``, whose hard bounds are the benchmark's ranges):

* ``random``: one round of random search, ``B`` full runs (Optuna's RandomSampler);
* ``tpe``: Optuna's TPESampler (its defaults), ``B`` full runs;
* ``tpe+hyperband``: the same with Optuna's HyperbandPruner (min_resource 1, max 52,
  reduction factor 3), trials one after another until the epochs are spent;
* ``asha``: random search under Ray Tune's ASHAScheduler (the class itself, driven in-process:
  grace period 6, reduction factor 3, max 52, hpo's ``search.scheduler: asha`` settings) with 4
  trials running side by side, until the epochs are spent;
* ``hpo``: hpo's coarse to fine, simulated in-process with hpo's own code: the study file
  ``lcbench.yaml`` parsed by ``hpo.config`` (its defaults: rounds, sampler, top_fraction, edge,
  widen, min_improvement, the hard bounds), each round sampled by ``hpo.space.make_sampler`` with
  ``hpo.space.round_seed`` through Optuna's ``ask(fixed_distributions=hpo.space.optuna_space(
  ranges))`` (what Ray Tune's OptunaSearch does in a round), ranges refined by
  ``hpo.space.refine`` and early stopping by ``hpo.space.should_stop``, as ``hpo.study`` does.
  ``trials_per_round = B / rounds``. ``--variants`` adds the candidates for a better default
  (``C2F`` below: TPE in rounds, carrying trials over, growing epochs, ASHA in rounds, faster
  widening, elite size).

Normalized regret of a run = (best - found) / (best - median), where ``found`` is the epoch-52
val_accuracy of the configuration the strategy recommends (the best by its last report among
the trials that ran the most epochs: full runs, for every strategy here), ``median`` the median
epoch-52 val_accuracy of 20,000 random configurations of the benchmark's ranges and ``best`` the
highest epoch-52 val_accuracy seen on the task: over those 20,000 and every configuration any
strategy ever evaluated (cached, and only ever raised, in ``results/lcbench_reference.json``).
0 is the best seen; 1 is a median random configuration.

``--real`` (on by default, off with ``--quick`` or ``--no-real``) runs the real ``hpo.search``
(Ray Tune, Optuna, MLflow on a throwaway sqlite store) on a subset and compares its regret with
the simulation's for the same seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402
import lcbench  # noqa: E402

BENCH = Path(__file__).resolve().parent
SPACES = {"benchmark": lcbench.BENCHMARK_RANGES, "wrong-range": lcbench.WRONG_RANGES}
STUDY_FILES = {"benchmark": BENCH / "lcbench.yaml", "wrong-range": BENCH / "lcbench_wrong_range.yaml"}
BUDGETS = (48, 126)
EPOCHS = lcbench.EPOCHS
REFERENCE = _bench.RESULTS / "lcbench_reference.json"
REFERENCE_SIZE = 20_000
ASHA_WORKERS = 4
ASHA_GRACE, ASHA_RF = max(1, EPOCHS // 8), 3  # hpo.execution.round._scheduler's settings


def _quiet_optuna() -> None:
    import optuna
    import scipy.special
    from optuna.samplers._tpe import _truncnorm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna's TPE computes log Phi one float at a time in Python; scipy's is the same function
    # (agrees to 1e-14) and halves the time of a TPE study. Speed only: no sample changes.
    _truncnorm._log_ndtr = scipy.special.log_ndtr


# ----------------------------------------------------------------------------- the landscape


class Task:
    """One OpenML task of the surrogate: full learning curves of configurations, and the epoch-52
    value of every configuration evaluated on it (for the reference's best)."""

    def __init__(self, task: int) -> None:
        self.task = task
        self.model = lcbench.surrogate()
        self.seen: list[float] = []

    def curve(self, config: Mapping[str, Any]) -> np.ndarray:
        """val_accuracy (fraction) at epochs 1..52: (52,)."""
        c = self.model.curves(self.task, [config])[0]
        self.seen.append(float(c[-1]))
        return c


@dataclass
class Outcome:
    """What a run left: ``found`` (epoch-52 value of the recommendation), its anytime trace
    (epochs spent, epoch-52 value of the recommendation so far) and its costs."""

    found: float
    trace: list[tuple[int, float]]
    epochs: int
    trials: int
    extra: dict[str, Any] = field(default_factory=dict)


class Ledger:
    """Counts epochs and keeps the recommendation: the best last report among the trials that
    ran the most epochs (its epoch-52 value is what counts)."""

    def __init__(self) -> None:
        self.epochs = 0
        self.trials = 0
        self.trace: list[tuple[int, float]] = []
        self._key: tuple[int, float] | None = None
        self._value = math.nan

    def spend(self, n: int = 1) -> None:
        self.epochs += n

    def finish(self, reported_epochs: int, last: float, final: float) -> None:
        """A trial ended after ``reported_epochs`` with ``last`` its last report; ``final`` is
        its configuration's epoch-52 value."""
        self.trials += 1
        key = (reported_epochs, last)
        if self._key is None or key > self._key:
            self._key, self._value = key, final
            self.trace.append((self.epochs, final))

    def outcome(self, **extra: Any) -> Outcome:
        return Outcome(found=self._value, trace=self.trace, epochs=self.epochs,
                       trials=self.trials, extra=extra)


# ----------------------------------------------------------------------------- spaces


def parse_study(space: str, *, task: int, seed: int, budget: int, rounds: int | None = None,
                **search: Any) -> Any:
    """The study file of ``space`` as hpo resolves it, for ``task``, ``seed`` and ``budget``
    full runs split over ``rounds`` (the file's default when None)."""
    import yaml

    from hpo.config.spec import parse_spec

    path = STUDY_FILES[space]
    raw = yaml.safe_load(path.read_text())
    raw["seed"] = seed
    raw["train"]["task"] = task
    if rounds is None:
        from hpo.config.sections import SearchSpec

        rounds = raw.get("search", {}).get("rounds", SearchSpec().rounds)
    raw["search"].update(rounds=rounds, trials_per_round=max(1, budget // rounds), **search)
    return parse_spec(raw, source=str(path))


def optuna_distributions(space: str) -> dict[str, Any]:
    from hpo.space import optuna_space, parse_distribution

    return optuna_space({k: parse_distribution(v) for k, v in SPACES[space].items()})


# ----------------------------------------------------------------------------- baselines


def run_full(task: Task, space: str, budget: int, seed: int, sampler: Any) -> Outcome:
    """``budget`` full runs, one after another, from ``sampler``."""
    import optuna

    dists = optuna_distributions(space)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    ledger = Ledger()
    for _ in range(budget):
        trial = study.ask(fixed_distributions=dists)
        c = task.curve(trial.params)
        ledger.spend(EPOCHS)
        study.tell(trial, float(c[-1]))
        ledger.finish(EPOCHS, float(c[-1]), float(c[-1]))
    return ledger.outcome()


def run_random(task: Task, space: str, budget: int, seed: int) -> Outcome:
    import optuna

    return run_full(task, space, budget, seed, optuna.samplers.RandomSampler(seed=seed))


def run_tpe(task: Task, space: str, budget: int, seed: int) -> Outcome:
    import optuna

    return run_full(task, space, budget, seed, optuna.samplers.TPESampler(seed=seed))


def run_tpe_hyperband(task: Task, space: str, budget: int, seed: int) -> Outcome:
    import optuna

    dists = optuna_distributions(space)
    study = optuna.create_study(
        # Hyperband puts a trial in a bracket by a hash of the study's name: a fixed name, or
        # every run draws other brackets
        study_name=f"tpe-hyperband-{seed}",
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS,
                                              reduction_factor=3))
    ledger, total = Ledger(), budget * EPOCHS
    while ledger.epochs < total:
        trial = study.ask(fixed_distributions=dists)
        c = task.curve(trial.params)
        epoch, pruned = 0, False
        while epoch < EPOCHS and ledger.epochs < total:
            epoch += 1
            ledger.spend()
            trial.report(float(c[epoch - 1]), epoch)
            if trial.should_prune():
                pruned = True
                break
        last = float(c[epoch - 1])
        if pruned or epoch == EPOCHS:
            if pruned:  # Optuna takes the last intermediate value as a pruned trial's
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, last)
            ledger.finish(epoch, last, float(c[-1]))
    return ledger.outcome()


def asha_loop(task: Task, ask: Callable[[], Any], tell: Callable[[Any, int, float], None],
              total: int, ledger: Ledger, *, workers: int = ASHA_WORKERS,
              max_trials: int | None = None) -> list[tuple[Any, int, float]]:
    """Ray Tune's ASHAScheduler over trials from ``ask``: ``workers`` trials advance one epoch
    each in turn, a freed worker takes the next, until ``total`` epochs (or ``max_trials``)
    are spent. Returns (handle, epochs run, last value) per trial that ended."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    scheduler = ASHAScheduler(time_attr="training_iteration", metric="val_accuracy",
                              mode="max", max_t=EPOCHS, grace_period=ASHA_GRACE,
                              reduction_factor=ASHA_RF)
    running: list[dict[str, Any]] = []
    ended: list[tuple[Any, int, float]] = []
    started = 0
    spent0 = ledger.epochs
    while True:
        while (len(running) < workers and ledger.epochs - spent0 < total
               and (max_trials is None or started < max_trials)):
            handle, config = ask()
            started += 1
            probe = _TrialId(f"t{started}")
            scheduler.on_trial_add(None, probe)
            running.append({"handle": handle, "curve": task.curve(config), "epoch": 0,
                            "probe": probe})
        if not running:
            break
        for r in list(running):
            if ledger.epochs - spent0 >= total:
                running.remove(r)  # the budget ended mid-trial: it never finishes
                continue
            r["epoch"] += 1
            ledger.spend()
            value = float(r["curve"][r["epoch"] - 1])
            action = scheduler.on_trial_result(
                None, r["probe"], {"training_iteration": r["epoch"], "val_accuracy": value})
            if action == TrialScheduler.STOP or r["epoch"] >= EPOCHS:
                running.remove(r)
                tell(r["handle"], r["epoch"], value)
                ledger.finish(r["epoch"], value, float(r["curve"][-1]))
                ended.append((r["handle"], r["epoch"], value))
    return ended


@dataclass(frozen=True)
class _TrialId:
    trial_id: str


def run_asha(task: Task, space: str, budget: int, seed: int) -> Outcome:
    import optuna

    np.random.seed(seed)  # Ray's bracket choice draws from numpy's global generator
    dists = optuna_distributions(space)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed))

    def ask() -> tuple[Any, dict[str, Any]]:
        t = study.ask(fixed_distributions=dists)
        return t, t.params

    ledger = Ledger()
    asha_loop(task, ask, lambda t, e, v: study.tell(t, v), budget * EPOCHS, ledger)
    return ledger.outcome()


# ----------------------------------------------------------------------------- hpo, simulated


@dataclass(frozen=True)
class C2F:
    """hpo's coarse to fine, simulated; ``None`` fields take the study file's resolved value.

    Each field is one candidate change to hpo's default:
    ``sampler``: random | qmc | tpe in every round (``search.sampler``);
    ``carry``: a round's sampler first learns every earlier trial whose values lie in the
    round's ranges (at its own epochs);
    ``epochs``: epochs per round (growing: the lecture's "a few epochs first"); the epoch budget
    is split evenly over the rounds, so early rounds run more, shorter trials;
    ``asha``: ASHA (hpo's settings) inside each round, trials drawn until the round's share of
    epochs is spent;
    ``escalate``: a parameter whose best sat on the same edge in the previous round too moves
    out by ``widen ** escalate`` instead of ``widen``;
    ``top_fraction``, ``widen``, ``rounds``: the search settings;
    ``early_stop``: hpo's ``should_stop`` after each round (``min_improvement``).
    """

    name: str = "hpo"
    rounds: int | None = None
    sampler: str | None = None
    carry: bool = False
    epochs: tuple[int, ...] | None = None
    asha: bool = False
    escalate: float | None = None
    top_fraction: float | None = None
    widen: float | None = None
    early_stop: bool = True

    def describe(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "name" and v != f.default:
                parts.append(f"{f.name}={'x'.join(map(str, v)) if isinstance(v, tuple) else v}")
        return ", ".join(parts) or "the default study"


def run_c2f(task: Task, space: str, budget: int, seed: int, v: C2F) -> Outcome:
    import optuna

    from hpo.space import (FinishedTrial, decode, encode, make_sampler, optuna_space, refine,
                           round_seed, should_stop)

    search = {k: getattr(v, k) for k in ("sampler", "top_fraction", "widen")
              if getattr(v, k) is not None}
    spec = parse_study(space, task=task.task, seed=seed, budget=budget, rounds=v.rounds, **search)
    rounds = spec.search.rounds
    settings = spec.refine_settings()
    epochs = v.epochs or (EPOCHS,) * rounds
    if len(epochs) != rounds:
        raise ValueError(f"{v.name}: {len(epochs)} epoch counts for {rounds} rounds")
    ranges = spec.distributions()
    total = budget * EPOCHS
    ledger = Ledger()
    history: list[tuple[dict[str, Any], float]] = []  # (sampled, metric) of every trial
    bests: list[float] = []
    previous_edges: dict[str, str] = {}
    stopped = None
    round_log = []
    for k in range(1, rounds + 1):
        share = (total - ledger.epochs) // (rounds - k + 1)  # even split of what is left
        e_k = epochs[k - 1]
        n_k = budget // rounds if v.epochs is None and not v.asha else max(1, share // e_k)
        if k == rounds and v.epochs is None and not v.asha:
            n_k = (total - ledger.epochs) // EPOCHS
        space_k = optuna_space(ranges)
        study = optuna.create_study(direction="maximize",
                                    sampler=make_sampler(spec.search.sampler,
                                                         round_seed(spec.seed, k), n_k))
        if v.carry:
            for params, metric in history:
                if all(ranges[n].contains(params[n]) for n in ranges):
                    study.add_trial(optuna.trial.create_trial(
                        params=encode(ranges, params), distributions=space_k, value=metric))
        finished: list[FinishedTrial] = []
        sampled_of: dict[int, dict[str, Any]] = {}

        def ask() -> tuple[Any, dict[str, Any]]:
            t = study.ask(fixed_distributions=space_k)
            sampled_of[t.number] = decode(ranges, t.params)
            return t, sampled_of[t.number]

        def tell(t: Any, reported: int, value: float) -> None:
            study.tell(t, value)
            finished.append(FinishedTrial(params=sampled_of[t.number], metric=value))
            history.append((sampled_of[t.number], value))

        if v.asha:
            asha_loop(task, ask, tell, share, ledger, max_trials=None)
        else:
            for _ in range(n_k):
                t, params = ask()
                c = task.curve(params)
                ledger.spend(e_k)
                tell(t, e_k, float(c[e_k - 1]))
                ledger.finish(e_k, float(c[e_k - 1]), float(c[-1]))
        best = max(f.metric for f in finished)
        round_log.append({"round": k, "trials": len(finished), "epochs": e_k, "best": best,
                          "ranges": {n: d.to_yaml() for n, d in ranges.items()}})
        bests.append(best)
        if k == rounds:
            break
        refinement = refine(ranges, finished, settings)
        new = dict(refinement.ranges)
        reasons = {c.name: str(c.reason) for c in refinement.changes}
        if v.escalate:
            again = [n for n, r in reasons.items()
                     if r.startswith("widened") and previous_edges.get(n) == r]
            if again:
                far = refine(ranges, finished, dataclasses.replace(
                    settings, widen=settings.widen ** v.escalate))
                for c in far.changes:
                    if c.name in again:
                        new[c.name] = c.new
        previous_edges = reasons
        round_log[-1]["reasons"] = reasons
        if (v.early_stop and len(bests) >= 2
                and should_stop(previous_best=max(bests[:-1]), best=bests[-1],
                                changes=refinement.changes,
                                min_improvement=spec.search.min_improvement, mode="max")):
            stopped = k
            break
        ranges = new
    return ledger.outcome(stopped_after=stopped, rounds=round_log)


# ----------------------------------------------------------------------------- reference


def sample_configs(n: int, seed: int) -> np.ndarray:
    """``n`` random configurations of the benchmark's ranges (log where log; integers as Optuna
    draws them: uniform over [lo - 0.5, hi + 0.5] in t-space, rounded), (n, 7)."""
    from hpo.space import parse_distribution

    rng = np.random.default_rng(seed)
    cols = []
    for name in lcbench.PARAMS:
        d = parse_distribution(SPACES["benchmark"][name])
        lo, hi = (d.low - 0.5, d.high + 0.5) if d.integer else (d.low, d.high)
        t = rng.uniform(math.log(lo) if d.log else lo, math.log(hi) if d.log else hi, n)
        x = np.exp(t) if d.log else t
        cols.append(np.clip(np.round(x), d.low, d.high) if d.integer else x)
    return np.stack(cols, axis=1).astype(np.float32)


def reference(tasks: Sequence[int]) -> dict[str, Any]:
    """Per task: median and max epoch-52 val_accuracy of 20,000 random configurations, and the
    best ever seen; computed once, cached in results/lcbench_reference.json."""
    ref = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    model = lcbench.surrogate()
    changed = False
    for task in tasks:
        key = str(task)
        if key in ref and ref[key].get("n") == REFERENCE_SIZE:
            continue
        x = sample_configs(REFERENCE_SIZE, seed=task)
        finals = np.concatenate([model.predict(task, x[i:i + 5000], [EPOCHS])[:, 0, 1]
                                 for i in range(0, len(x), 5000)]) / 100.0
        ref[key] = {"n": REFERENCE_SIZE, "seed": task, "median": float(np.median(finals)),
                    "max_random": float(finals.max()), "best_seen": float(finals.max())}
        changed = True
    if changed:
        write_reference(ref)
    return ref


def write_reference(ref: dict[str, Any]) -> None:
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(ref, indent=2) + "\n")


def regret(found: float, ref: Mapping[str, float]) -> float:
    return (ref["best_seen"] - found) / (ref["best_seen"] - ref["median"])


# ----------------------------------------------------------------------------- the real hpo


def run_real(space: str, task: int, seed: int, budget: int, root: Path, uri: str,
             v: C2F = C2F()) -> dict[str, Any]:
    """The real ``hpo.search`` on the study file, as a user's script calls it; a variant only
    where the study file can say it (sampler, rounds, top_fraction, widen)."""
    import hpo

    if v.carry or v.epochs or v.asha or v.escalate or not v.early_stop:
        raise ValueError(f"{v.name}: no study file says {v.describe()}; it exists only simulated")
    search = {k: getattr(v, k) for k in ("sampler", "top_fraction", "widen")
              if getattr(v, k) is not None}
    spec = parse_study(space, task=task, seed=seed, budget=budget, rounds=v.rounds, **search)
    t0 = time.perf_counter()
    result = hpo.search(spec, quiet=True, tracking_uri=uri, study_root=root)
    wall = time.perf_counter() - t0
    best = {k: result.best_config[k] for k in lcbench.PARAMS}
    final = float(lcbench.surrogate().curves(task, [best])[0, -1])
    return {"found": final, "best_metric": result.best_metric, "trials": len(result.trials),
            "wall_s": wall, "best_config": best}


# ----------------------------------------------------------------------------- the run


BASELINES: dict[str, tuple[str, Callable[..., Outcome]]] = {
    "random": ("random search, 1 round", run_random),
    "tpe": ("Optuna TPE", run_tpe),
    "tpe+hyperband": ("Optuna TPE + HyperbandPruner", run_tpe_hyperband),
    "asha": ("Ray Tune ASHA + random search", run_asha),
}

#: The candidates for a better default (``--variants``), each one change from the default
#: unless its name says otherwise.
VARIANTS: tuple[C2F, ...] = (
    C2F(name="hpo tpe", sampler="tpe"),
    C2F(name="hpo tpe carry", sampler="tpe", carry=True),
    C2F(name="hpo carry", carry=True),  # random rounds; carry does nothing without a model
    C2F(name="hpo epochs 6-18-52", epochs=(6, 18, 52)),
    C2F(name="hpo tpe carry epochs 6-18-52", sampler="tpe", carry=True, epochs=(6, 18, 52)),
    C2F(name="hpo asha", asha=True),
    C2F(name="hpo tpe asha", sampler="tpe", asha=True),
    C2F(name="hpo escalate", escalate=2.0),
    C2F(name="hpo tpe carry escalate", sampler="tpe", carry=True, escalate=2.0),
    C2F(name="hpo top 0.5", top_fraction=0.5),
    C2F(name="hpo tpe carry top 0.5", sampler="tpe", carry=True, top_fraction=0.5),
    C2F(name="hpo tpe carry 2 rounds", sampler="tpe", carry=True, rounds=2),
    C2F(name="hpo tpe carry 4 rounds", sampler="tpe", carry=True, rounds=4),
    C2F(name="hpo tpe carry top 0.5 escalate", sampler="tpe", carry=True, top_fraction=0.5,
        escalate=2.0),
    C2F(name="hpo tpe carry top 0.5 4 rounds", sampler="tpe", carry=True, top_fraction=0.5,
        rounds=4),
    C2F(name="hpo tpe carry top 0.5 no early stop", sampler="tpe", carry=True,
        top_fraction=0.5, early_stop=False),
    C2F(name="hpo qmc", sampler="qmc"),
    C2F(name="hpo tpe 4 rounds", sampler="tpe", rounds=4),
    C2F(name="hpo tpe top 0.5 4 rounds", sampler="tpe", top_fraction=0.5, rounds=4),
    C2F(name="hpo tpe carry top 0.5 4 rounds no early stop", sampler="tpe", carry=True,
        top_fraction=0.5, rounds=4, early_stop=False),
)


def strategies(args: argparse.Namespace) -> dict[str, tuple[str, Callable[..., Outcome]]]:
    out = dict(BASELINES)
    default = C2F()
    spec = parse_study("benchmark", task=lcbench.TASKS[0], seed=0, budget=48)
    resolved = (f"sampler {spec.search.sampler}, {spec.search.rounds} rounds, top_fraction "
                f"{spec.search.top_fraction:g}, widen {spec.search.widen:g}, min_improvement "
                f"{spec.search.min_improvement:g}")
    out["hpo"] = (f"hpo's default study as it resolves now ({resolved}), simulated",
                  lambda t, s, b, seed: run_c2f(t, s, b, seed, default))
    for v in (VARIANTS if args.variants else ()):
        if args.only and v.name not in args.only:
            continue
        out[v.name] = (v.describe(), lambda t, s, b, seed, v=v: run_c2f(t, s, b, seed, v))
    if args.only:
        out = {k: w for k, w in out.items() if k in args.only or k in ("random", "tpe", "hpo")}
    return {k: w for k, w in out.items() if k not in (args.skip or ())}


def summarize(runs: list[dict[str, Any]], ref: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r["space"], r["budget"], r["strategy"]) for r in runs},
                  key=lambda k: (list(SPACES).index(k[0]), k[1], _order(runs, k[2])))
    for space, budget, strategy in keys:
        mine = [r for r in runs if (r["space"], r["budget"], r["strategy"]) ==
                (space, budget, strategy)]
        regrets = [regret(r["found"], ref[str(r["task"])]) for r in mine]
        per_task = {t: statistics.fmean(regret(r["found"], ref[str(t)]) for r in mine
                                        if r["task"] == t)
                    for t in sorted({r["task"] for r in mine})}
        rows.append({"space": space, "budget": budget, "strategy": strategy,
                     "mean": statistics.fmean(regrets), "median": statistics.median(regrets),
                     "worst_task": max(per_task.values()),
                     "worst_task_id": max(per_task, key=per_task.get),
                     "per_task": per_task, "n": len(regrets),
                     "epochs": statistics.fmean(r["epochs"] for r in mine),
                     "trials": statistics.fmean(r["trials"] for r in mine),
                     "seconds": statistics.fmean(r["seconds"] for r in mine)})
    return rows


def _order(runs: list[dict[str, Any]], strategy: str) -> int:
    names = list(dict.fromkeys(r["strategy"] for r in runs))
    return names.index(strategy)


def targets(rows: list[dict[str, Any]], name: str) -> list[str]:
    """The issue's targets for strategy ``name``, each with its numbers."""
    at = {(r["space"], r["budget"], r["strategy"]): r for r in rows}
    out = []
    for budget in sorted({r["budget"] for r in rows}):
        me = at.get(("benchmark", budget, name))
        tpe, hb = at.get(("benchmark", budget, "tpe")), at.get(("benchmark", budget,
                                                                "tpe+hyperband"))
        if me and tpe:
            out.append(f"benchmark's ranges, {budget} runs: mean {me['mean']:.3f} <= TPE "
                       f"{tpe['mean']:.3f}: {'met' if me['mean'] <= tpe['mean'] else 'MISSED'}")
        if me and hb:
            out.append(f"benchmark's ranges, {budget} runs: mean {me['mean']:.3f} <= TPE+"
                       f"Hyperband {hb['mean']:.3f}: "
                       f"{'met' if me['mean'] <= hb['mean'] else 'MISSED'}")
        me_w, tpe_w = at.get(("wrong-range", budget, name)), at.get(("wrong-range", budget,
                                                                     "tpe"))
        if me_w and tpe_w:
            out.append(f"wrong range, {budget} runs: mean {me_w['mean']:.3f} <= half of TPE's "
                       f"{tpe_w['mean']:.3f}: "
                       f"{'met' if me_w['mean'] <= tpe_w['mean'] / 2 else 'MISSED'}")
        for space in SPACES:
            me_s, rnd = at.get((space, budget, name)), at.get((space, budget, "random"))
            if me_s and rnd:
                worse = [t for t in me_s["per_task"]
                         if me_s["per_task"][t] > rnd["per_task"].get(t, math.inf)]
                out.append(f"{space}, {budget} runs: no task worse than random: "
                           + ("met" if not worse else "MISSED on " + ", ".join(map(str, worse))))
    return out


def anytime(runs: list[dict[str, Any]], ref: dict[str, Any], space: str, budget: int,
            grid: np.ndarray) -> dict[str, list[float]]:
    """Mean regret of the recommendation so far at each epoch count of ``grid``."""
    out: dict[str, list[float]] = {}
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        mine = [r for r in runs if (r["space"], r["budget"], r["strategy"]) ==
                (space, budget, strategy)]
        if not mine:
            continue
        curves = []
        for r in mine:
            ep = np.array([e for e, _ in r["trace"]] or [0])
            val = np.array([regret(f, ref[str(r["task"])]) for _, f in r["trace"]] or [1.0])
            idx = np.searchsorted(ep, grid, side="right") - 1
            curves.append(np.where(idx >= 0, val[np.maximum(idx, 0)], np.nan))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # before any run's first result
            out[strategy] = np.nanmean(np.array(curves), axis=0).tolist()
    return out


def plot(curves: dict[str, dict[str, list[float]]], grid: np.ndarray, budget: int,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.2), sharey=False)
    for ax, (space, by) in zip(np.atleast_1d(axes), curves.items()):
        for strategy, ys in by.items():
            ax.plot(grid / EPOCHS, ys, label=strategy,
                    lw=2.2 if strategy == "hpo" else 1.3,
                    ls="-" if not strategy.startswith("hpo ") else "--")
        ax.set_yscale("log")
        ax.set_xlabel("epochs spent / 52 (full-run equivalents)")
        ax.set_ylabel("mean normalized regret (log)")
        ax.set_title(f"LCBench, {space}: budget {budget} full runs")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(rows: list[dict[str, Any]], labels: dict[str, str], args: argparse.Namespace,
           real: list[dict[str, Any]], wall: float, ref: dict[str, Any]) -> str:
    header = ("space", "budget (runs)", "strategy", "mean regret", "median", "worst task (id)",
              "epochs/52", "trials", "s/run")
    body = [(r["space"], r["budget"], r["strategy"], f"{r['mean']:.3f}", f"{r['median']:.3f}",
             f"{r['worst_task']:.3f} ({r['worst_task_id']})", f"{r['epochs'] / EPOCHS:.1f}",
             f"{r['trials']:.0f}", f"{r['seconds']:.2f}") for r in rows]
    lines = [f"# Search quality on LCBench ({'quick run' if args.quick else 'full run'})", "",
             f"Normalized regret (0 = best seen, 1 = a median random configuration) at the final "
             f"epoch, over tasks {', '.join(map(str, args.tasks))} and seeds "
             f"{', '.join(map(str, args.seeds))} ({len(args.seeds)} seeds; *mean* and *median* over "
             f"task x seed, *worst task*: the task with the highest mean over seeds). Budgets in "
             f"epochs: B full runs = 52 B epochs. Spaces: *benchmark*, the benchmark's ranges; "
             f"*wrong-range*, learning_rate [1e-4, 1e-3], max_units [64, 128], weight_decay "
             f"[1e-5, 1e-3], batch_size [256, 512] (other parameters as the benchmark), hard "
             f"bounds = the benchmark's ranges (only hpo's refinement may leave the first "
             f"range). See the module docstring for each strategy.", "",
             _bench.markdown_table(header, body), "", "Strategies:", ""]
    lines += [f"- `{k}`: {v}" for k, v in labels.items()]
    lines += ["", "Reference (epoch-52 val_accuracy, 20,000 random configurations of the "
              "benchmark's ranges; best = the highest ever seen):", ""]
    lines.append(_bench.markdown_table(
        ("task", "median", "max of 20,000", "best seen"),
        [(t, f"{ref[str(t)]['median']:.4f}", f"{ref[str(t)]['max_random']:.4f}",
          f"{ref[str(t)]['best_seen']:.4f}") for t in args.tasks]))
    for name in [n for n in dict.fromkeys(r["strategy"] for r in rows) if n.startswith("hpo")]:
        lines += ["", f"Targets of issue #18 for `{name}`:", ""]
        lines += [f"- {t}" for t in targets(rows, name)]
    if real:
        lines += ["", "Real `hpo.search` (Ray Tune, Optuna, MLflow) against the simulation, same "
                  "study, seed and task:", ""]
        lines.append(_bench.markdown_table(
            ("strategy", "space", "budget", "task", "seed", "real regret", "simulated regret",
             "real trials", "real wall, s"),
            [(r.get("strategy", "hpo"), r["space"], r["budget"], r["task"], r["seed"],
              f"{regret(r['found'], ref[str(r['task'])]):.4f}",
              f"{regret(r['sim_found'], ref[str(r['task'])]):.4f}", r["trials"],
              f"{r['wall_s']:.1f}") for r in real]))
        for name in dict.fromkeys(r.get("strategy", "hpo") for r in real):
            mine = [r for r in real if r.get("strategy", "hpo") == name]
            diffs = [abs(r["found"] - r["sim_found"]) for r in mine]
            mean = statistics.fmean(regret(r["found"], ref[str(r["task"])]) for r in mine)
            sim = statistics.fmean(regret(r["sim_found"], ref[str(r["task"])]) for r in mine)
            lines += ["", f"`{name}`: mean regret real {mean:.4f}, simulated {sim:.4f}; largest "
                      f"difference in found val_accuracy {max(diffs):.2e} over {len(mine)} "
                      f"studies."]
    lines += ["", f"![anytime regret]({args.out}.png)", "",
              f"Machine: {_bench.cores()} cores; whole benchmark {wall:.0f} s. Command: "
              f"`{_bench.command_line(args.argv)}`"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: seeds 0 1, budget 48, no real hpo.search (under 5 minutes)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="default 0..9 (--quick: 0 1)")
    p.add_argument("--budgets", type=int, nargs="+", default=None,
                   help="full-run equivalents (default 48 126; --quick: 48)")
    p.add_argument("--tasks", type=int, nargs="+", default=list(lcbench.TASKS))
    p.add_argument("--spaces", nargs="+", choices=list(SPACES), default=list(SPACES))
    p.add_argument("--variants", action="store_true",
                   help="also the candidate changes to hpo's default (C2F variants)")
    p.add_argument("--only", nargs="+", default=None,
                   help="only these strategies (random, tpe and hpo always run)")
    p.add_argument("--skip", nargs="+", default=None, help="leave out these strategies")
    p.add_argument("--real", dest="real", action="store_true", default=None,
                   help="run the real hpo.search on a subset (default: on, off with --quick)")
    p.add_argument("--no-real", dest="real", action="store_false")
    p.add_argument("--real-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--real-space", choices=list(SPACES), default="wrong-range")
    p.add_argument("--real-variants", nargs="+", default=None,
                   help="also run these variants for real (those a study file can say)")
    p.add_argument("--out", default=None,
                   help="result stem in benchmarks/results (default search_quality; --quick: "
                   "search_quality_quick)")
    args = p.parse_args(argv)
    args.argv = argv
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else list(range(10))
    if args.budgets is None:
        args.budgets = [48] if args.quick else list(BUDGETS)
    if args.real is None:
        args.real = not args.quick
    if args.out is None:
        args.out = ("search_quality_quick" if args.quick else "search_quality") + (
            "_variants" if args.variants else "")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lcbench.require_surrogate()
    _quiet_optuna()
    t_all = time.perf_counter()
    ref = reference(args.tasks)
    strats = strategies(args)
    runs: list[dict[str, Any]] = []
    tasks = {t: Task(t) for t in args.tasks}
    total = len(args.spaces) * len(args.budgets) * len(strats) * len(args.tasks) * len(args.seeds)
    done = 0
    for space in args.spaces:
        for budget in args.budgets:
            for name, (_, fn) in strats.items():
                t_s = time.perf_counter()
                for task in args.tasks:
                    for seed in args.seeds:
                        t0 = time.perf_counter()
                        o = fn(tasks[task], space, budget, seed)
                        runs.append({"space": space, "budget": budget, "strategy": name,
                                     "task": task, "seed": seed, "found": o.found,
                                     "epochs": o.epochs, "trials": o.trials, "trace": o.trace,
                                     "seconds": time.perf_counter() - t0, **o.extra})
                        done += 1
                print(f"[{done}/{total}] {space:11s} B={budget:3d} {name:32s} "
                      f"{time.perf_counter() - t_s:6.1f} s", file=sys.stderr, flush=True)
    # the best ever seen rises with what the strategies found
    for task, t in tasks.items():
        if t.seen:
            ref[str(task)]["best_seen"] = max(ref[str(task)]["best_seen"], max(t.seen))
    real: list[dict[str, Any]] = []
    if args.real:
        real = run_real_subset(args, runs)
        for r in real:
            key = str(r["task"])
            ref[key]["best_seen"] = max(ref[key]["best_seen"], r["found"])
    write_reference(ref)
    rows = summarize(runs, ref)
    labels = {k: v[0] for k, v in strats.items()}
    budget = max(args.budgets)
    grid = np.linspace(0, budget * EPOCHS, 200)
    curves = {s: anytime(runs, ref, s, budget, grid) for s in args.spaces}
    png = _bench.RESULTS / f"{args.out}.png"
    plot(curves, grid, budget, png)
    wall = time.perf_counter() - t_all
    text = render(rows, labels, args, real, wall, ref)
    raw = {"benchmark": "search_quality", "args": {k: v for k, v in vars(args).items()},
           "machine": _bench.machine(), "reference": {str(t): ref[str(t)] for t in args.tasks},
           "strategies": labels, "summary": rows, "real": real,
           "anytime": {"grid_epochs": grid.tolist(), "budget": budget, "curves": curves},
           # per run: what it found and spent (traces and ranges stay out: megabytes)
           "runs": [{k: v for k, v in r.items() if k not in ("trace", "rounds")} for r in runs],
           "wall_s": wall}
    md, js = _bench.write_results(args.out, text, raw)
    print(text)
    print(f"written: {md}, {js}, {png}", file=sys.stderr)
    return 0


def run_real_subset(args: argparse.Namespace, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The real hpo.search on --real-space, the smallest budget, --real-seeds, every task."""
    import ray

    budget = min(args.budgets)
    out = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-sq-") as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        try:
            studies = [(v, task, seed)
                       for v in [C2F(), *(w for w in VARIANTS if w.name in (args.real_variants or ()))]
                       for task in args.tasks for seed in args.real_seeds]
            for v, task, seed in studies:
                sim = next((r for r in runs if (r["space"], r["budget"], r["strategy"],
                                                r["task"], r["seed"]) ==
                            (args.real_space, budget, v.name, task, seed)), None)
                if sim is None:
                    sim = {"found": run_c2f(Task(task), args.real_space, budget, seed, v).found}
                folder = root / ("studies-" + v.name.replace(" ", "-"))
                r = run_real(args.real_space, task, seed, budget, folder, uri, v)
                out.append({"space": args.real_space, "budget": budget, "task": task,
                            "seed": seed, "strategy": v.name, "sim_found": sim["found"], **r})
                print(f"real hpo.search {v.name}, {args.real_space} task {task} seed {seed}: "
                      f"found {r['found']:.4f} (simulated {sim['found']:.4f}), "
                      f"{r['wall_s']:.0f} s", file=sys.stderr, flush=True)
        finally:
            ray.shutdown()
    return out


if __name__ == "__main__":
    sys.exit(main())
