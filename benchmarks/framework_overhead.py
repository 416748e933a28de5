"""What the frameworks cost: the same trials, bare, under Optuna, under Ray Tune, under hpo.

    python benchmarks/framework_overhead.py [--quick] [--repeats N] [--seeds 0]

One fixed list of trial configurations (digits MLP 64→128→10; 64 trials; 10 epochs; momentum
SGD; searched: ``lr`` log-uniform [1e-3, 1e-1], ``activation`` in {relu, leaky_relu, elu,
tanh}, ``batchnorm`` in {true, false}) is trained by each runner in turn, each runner in its own
subprocess so that none shares a warm Ray, a loaded torch or a page cache of imports with
another:

1. ``bare``: a plain loop over the configurations calling ``hpo.trial.train.train_trial``, one
   process, one torch thread, sequential. Its time divided by the cores is the *ideal*.
2. ``optuna``: ``optuna.create_study`` + ``study.enqueue_trial`` for every configuration +
   ``study.optimize(objective, n_jobs=cores)`` in-process (threads); the objective calls
   ``train_trial`` (torch: one thread per Optuna thread).
3. ``ray-tune``: Ray Tune as its docs show it: ``ray.init()``; ``tune.Tuner`` over a function
   trainable (``tune.with_parameters`` passes the data) that trains and calls ``tune.report``
   every epoch, ``param_space`` of ``tune.loguniform`` / ``tune.choice``, ``OptunaSearch`` with
   the fixed configurations as ``points_to_evaluate`` (so TPE never gets to propose one),
   ``MLflowLoggerCallback(tracking_uri=<sqlite in a temp dir>)``, ``RunConfig(verbose=0)``;
   everything else Tune's defaults (a new actor per trial, ``reuse_actors=False``; Tune's
   CSV/JSON/TensorBoard loggers on). Only ``storage_path`` points into the temp dir.
4. ``hpo``: ``hpo search STUDY.yaml --quiet`` (``hpo.cli.main`` in-process) with everything on:
   sanity checks (``strict: false`` so that a failed check cannot end the run), MLflow (sqlite in
   a temp dir), per-epoch diagnostics, round plots, final retraining and report. One round of 64
   trials with ``search.sampler: random``. The fixed list *is* the list hpo's seeded random
   sampler draws for round 1 (``RandomSampler(seed=hpo.space.round_seed(seed, 1))`` asked with
   ``hpo.space.optuna_space``), so hpo trains the very same configurations; the script checks
   this and says so in the table (column *configs*).

The trainable body is ``train_trial`` everywhere (the same arithmetic, divergence check,
update/weight ratios and activation statistics), with the study seed. For ``ray-tune`` and
``hpo``, Ray's start-up (``ray.init()``) is timed on its own and left out of the trials phase;
so is hpo's wait, before its first round, for the worker processes that its Ray starts with it
to finish importing torch (column *warm workers wait*).

Columns: wall time of the trials phase (median and min–max over repeats), trials per second,
ratio to the ideal (bare sequential time / cores), Ray start-up, how long into the trials
phase the first trial function started (for Ray: a worker process and the trial actor), the rest of the
runner's in-process time (data loading; for hpo also sanity checks, final retraining, plots,
artifacts; for Ray also shutdown), the subprocess' whole wall time (imports included), peak
memory (the largest sum of RSS over the runner's process tree — driver, Ray's daemons and
workers — sampled every 0.2 s; shared pages count once per process), and the epochs trained
(the same work everywhere when the configurations are the same).
"""

from __future__ import annotations

import os

BASE_ENV = dict(os.environ)  # before hpo.execution's import sets Tune's environment: runners get this

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402

RUNNERS = ("bare", "optuna", "ray-tune", "hpo", "hpo-packed")
LABELS = {
    "bare": "1. bare PyTorch loop, sequential, 1 process, 1 thread",
    "optuna": "2. Optuna study.optimize in-process, n_jobs = cores",
    "ray-tune": "3. Ray Tune as documented: Tuner + OptunaSearch + MLflowLoggerCallback, defaults",
    "hpo": "4. hpo search, everything on (MLflow, sanity checks, diagnostics, plots)",
    "hpo-packed": "5. hpo search as 4, with search.pack: 8 (packs sample their own configs)",
}
STUDY_NAME = "framework-overhead"


def study_dict(*, seed: int, trials: int, epochs: int) -> dict[str, Any]:
    return {
        "name": STUDY_NAME,
        "seed": seed,
        "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
        "model": {"arch": "mlp", "hidden": [128], "init": "he", "dropout": 0.0,
                  "activation": {"choice": ["relu", "leaky_relu", "elu", "tanh"]},
                  "batchnorm": {"choice": [True, False]}},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": "momentum",
                  "momentum": 0.9, "weight_decay": 0.0,
                  "lr": {"loguniform": [1e-3, 1e-1]}},
        "search": {"metric": "val_accuracy", "mode": "max", "sampler": "random", "rounds": 1,
                   "trials_per_round": trials, "scheduler": "fifo",
                   "resources_per_trial": {"cpu": 1, "gpu": 0}},
        "sanity": {"enabled": True, "strict": False},
    }


def draw_configs(spec_dict: dict[str, Any]) -> list[dict[str, Any]]:
    """The list hpo's round 1 samples: Optuna's RandomSampler seeded as hpo seeds round 1."""
    import optuna

    from hpo.config.spec import parse_spec
    from hpo.space.bridge import decode, optuna_space, round_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = parse_spec(spec_dict)
    ranges = spec.distributions()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(
        seed=round_seed(spec.seed, 1)))
    space = optuna_space(ranges)
    return [decode(ranges, study.ask(fixed_distributions=space).params)
            for _ in range(spec.search.trials_per_round)]


# ----------------------------------------------------------------------------- runners
# Each runs in its own subprocess: `framework_overhead.py --runner NAME --work DIR --result F`.


def _setup(work: Path) -> tuple[dict[str, Any], list[dict[str, Any]], Any, Any]:
    from hpo.data.dataset import load_dataset
    from hpo.config.spec import parse_spec

    job = json.loads((work / "job.json").read_text())
    spec = parse_spec(job["spec"])
    data = load_dataset(spec.data, seed=spec.seed)
    return job, job["configs"], spec, data


def run_bare(work: Path) -> dict[str, Any]:
    import torch

    from hpo.trial.train import train_trial

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    job, configs, spec, data = _setup(work)
    trials = []
    t1 = time.perf_counter()
    for config in configs:
        outcome = train_trial(spec.resolve(config), data, seed=spec.seed)
        trials.append({"config": config, "val_accuracy": outcome.last.get("val_accuracy"),
                       "epochs": len(outcome.history), "status": outcome.status})
    t2 = time.perf_counter()
    return {"trials_s": t2 - t1, "total_s": t2 - t0, "ray_start_s": None, "trials": trials}


def run_optuna(work: Path) -> dict[str, Any]:
    import optuna
    import torch

    from hpo.space.distributions import Categorical, Float, Int
    from hpo.trial.train import train_trial

    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # one intra-op thread per Optuna worker thread
    job, configs, spec, data = _setup(work)
    ranges = spec.distributions()
    epochs: dict[int, int] = {}

    def objective(trial: optuna.Trial) -> float:
        sampled: dict[str, Any] = {}
        for name, d in ranges.items():
            if isinstance(d, Categorical):
                sampled[name] = trial.suggest_categorical(name, list(d.choices))
            elif isinstance(d, Int):
                sampled[name] = trial.suggest_int(name, int(d.low), int(d.high), log=d.log)
            elif isinstance(d, Float):
                sampled[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
        outcome = train_trial(spec.resolve(sampled), data, seed=spec.seed)
        epochs[trial.number] = len(outcome.history)
        trial.set_user_attr("status", outcome.status)
        return outcome.last.get("val_accuracy", 0.0)

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=spec.seed))
    for config in configs:
        study.enqueue_trial(config)
    t1 = time.perf_counter()
    study.optimize(objective, n_trials=len(configs), n_jobs=_bench.cores())
    t2 = time.perf_counter()
    trials = [{"config": t.params, "val_accuracy": t.value, "epochs": epochs.get(t.number, 0),
               "status": t.user_attrs.get("status", t.state.name.lower())}
              for t in study.trials]
    return {"trials_s": t2 - t1, "total_s": t2 - t0, "ray_start_s": None, "trials": trials}


class FirstTrial:
    """A Tune callback that notes when the round's first trial function started: the arrival of
    its first result less the trainable's time until then (Tune's ``time_total_s``). The wait
    from the round's start to then is a worker process and the trial actor starting."""

    def __init__(self) -> None:
        self.started: float | None = None

    def callback(self) -> Any:
        return _bench.tune_probe(on_result=self._result)

    def _result(self, trial: Any, result: dict) -> None:
        if self.started is None:
            self.started = time.perf_counter() - float(result.get("time_total_s", 0))


def run_ray_tune(work: Path) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from hpo.space.distributions import Categorical, Float, Int
    from hpo.trial.train import train_trial

    t0 = time.perf_counter()
    job, configs, spec, data = _setup(work)
    fixed, seed = spec.fixed(), spec.seed

    def train_digits(config: dict[str, Any], data: Any = None) -> None:
        # The textbook function trainable: build, train, tune.report() once per epoch.
        train_trial({**fixed, **config}, data, seed=seed, report=tune.report)

    param_space: dict[str, Any] = {}
    for name, d in spec.distributions().items():
        if isinstance(d, Categorical):
            param_space[name] = tune.choice(list(d.choices))
        elif isinstance(d, Int):
            param_space[name] = (tune.lograndint if d.log else tune.randint)(
                int(d.low), int(d.high) + 1)
        elif isinstance(d, Float):
            param_space[name] = (tune.loguniform if d.log else tune.uniform)(d.low, d.high)

    t1 = time.perf_counter()
    ray.init()
    t2 = time.perf_counter()
    first = FirstTrial()
    tuner = tune.Tuner(
        tune.with_parameters(train_digits, data=data),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="val_accuracy", mode="max", num_samples=len(configs),
            search_alg=OptunaSearch(points_to_evaluate=configs),
        ),
        run_config=tune.RunConfig(
            name="textbook", storage_path=str(work / "ray_results"), verbose=0,
            callbacks=[MLflowLoggerCallback(tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                                            experiment_name=STUDY_NAME), first.callback()],
        ),
    )
    grid = tuner.fit()
    t3 = time.perf_counter()
    trials = []
    for r in grid:
        m = r.metrics or {}
        trials.append({"config": {k: r.config[k] for k in param_space},
                       "val_accuracy": m.get("val_accuracy"),
                       "epochs": int(m.get("training_iteration", 0) or 0),
                       "status": "failed" if r.error else
                       ("diverged" if m.get("diverged") else "ok")})
    ray.shutdown()
    t4 = time.perf_counter()
    return {"trials_s": t3 - t2, "total_s": t4 - t0, "ray_start_s": t2 - t1,
            "first_trial_s": first.started - t2 if first.started else None, "trials": trials}


def run_hpo(work: Path) -> dict[str, Any]:
    import yaml

    import hpo.execution.cluster
    import hpo.execution.round
    from hpo.cli import main as hpo_main
    from hpo.tracking.journal import Journal

    t0 = time.perf_counter()
    job = json.loads((work / "job.json").read_text())
    study = work / "study.yaml"
    study.write_text(yaml.safe_dump(job["spec"], sort_keys=False))
    t1 = time.perf_counter()
    hpo.execution.cluster.start_ray(None)  # what `hpo search` does first; run_study finds it
    t2 = time.perf_counter()
    rounds: list[float] = []
    run_round = hpo.execution.round.run_round
    first, round_start = FirstTrial(), []

    def timed_round(*args: Any, callbacks: Any = (), **kwargs: Any) -> Any:
        start = time.perf_counter()
        round_start.append(start)
        try:
            return run_round(*args, callbacks=[*callbacks, first.callback()], **kwargs)
        finally:
            rounds.append(time.perf_counter() - start)

    waits: list[float] = []
    try:
        with _bench.round_timed(timed_round, waits):
            code = hpo_main(["search", str(study), "--quiet", "--tracking-uri",
                             f"sqlite:///{work / 'mlflow.db'}", "--study-root",
                             str(work / "hpo_runs")])
    finally:
        import ray

        ray.shutdown()
    t3 = time.perf_counter()
    if code != 0:
        raise RuntimeError(f"hpo search exited with {code}")
    state = Journal(work / "hpo_runs" / job["spec"]["name"] / "journal.jsonl").replay()
    trials = [{"config": r.sampled, "val_accuracy": r.metric("val_accuracy"),
               "epochs": len(r.history), "status": r.status} for r in state.round_records(1)]
    return {"trials_s": sum(rounds), "total_s": t3 - t0, "ray_start_s": t2 - t1,
            "warm_wait_s": sum(waits),
            "first_trial_s": first.started - round_start[0] if first.started else None,
            "trials": trials}


def run_hpo_packed(work: Path) -> dict[str, Any]:
    """As run_hpo, with eight trials per Ray trial trained as one vectorized model. The packed
    searcher asks Optuna for whole packs, so its configurations are not the fixed list's."""
    job = json.loads((work / "job.json").read_text())
    job["spec"].setdefault("search", {})["pack"] = 8
    (work / "job.json").write_text(json.dumps(job))
    return run_hpo(work)


RUNNER_FUNCS = {"bare": run_bare, "optuna": run_optuna, "ray-tune": run_ray_tune,
                "hpo": run_hpo, "hpo-packed": run_hpo_packed}


# ----------------------------------------------------------------------------- the driver


class TreeMemory(_bench.Sampler):
    """Peak of the summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(interval)
        self._psutil = _bench.psutil()
        self._root = self._psutil.Process(pid)
        self.peak = 0
        self.peak_processes = 0

    def sample(self) -> None:
        total, count = 0, 0
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except self._psutil.Error:
            procs = []
        for p in procs:
            try:
                total += p.memory_info().rss
                count += 1
            except self._psutil.Error:
                pass
        if total > self.peak:
            self.peak, self.peak_processes = total, count


def run_runner(name: str, work: Path, timeout: float) -> dict[str, Any]:
    result_file = work / f"result-{name}.json"
    log_file = work / f"log-{name}.txt"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--runner", name, "--work", str(work),
           "--result", str(result_file)]
    env = {**BASE_ENV, "PYTHONUNBUFFERED": "1"}
    with open(log_file, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=str(work))
        with TreeMemory(proc.pid) as mem:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        wall = time.perf_counter() - t0
    out: dict[str, Any] = {"runner": name, "process_wall_s": wall, "exit_code": code,
                           "peak_rss_bytes": mem.peak, "peak_processes": mem.peak_processes}
    if code == 0 and result_file.exists():
        out.update(json.loads(result_file.read_text()))
    else:
        tail = log_file.read_text().splitlines()[-30:]
        out["error"] = f"exit code {code}"
        out["log_tail"] = tail
        print(f"runner {name} failed (exit {code}); last lines of its log:\n  "
              + "\n  ".join(tail), file=sys.stderr)
    return out


def _key(config: dict[str, Any]) -> tuple:
    return tuple(sorted((k, round(v, 12) if isinstance(v, float) and not isinstance(v, bool)
                         else v) for k, v in config.items()))


def same_configs(fixed: list[dict[str, Any]], trials: list[dict[str, Any]]) -> tuple[int, int]:
    """How many of the fixed configurations the runner trained (as a multiset)."""
    want: dict[tuple, int] = {}
    for c in fixed:
        want[_key(c)] = want.get(_key(c), 0) + 1
    hit = 0
    for t in trials:
        k = _key(t["config"])
        if want.get(k, 0) > 0:
            want[k] -= 1
            hit += 1
    return hit, len(fixed)


def summarize(runs: list[dict[str, Any]], runners: list[str], cores: int) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for name in runners:
        mine = [r for r in runs if r["runner"] == name and "error" not in r]
        rows[name] = {
            "trials_s": [r["trials_s"] for r in mine],
            "ray_start_s": [r["ray_start_s"] for r in mine if r.get("ray_start_s") is not None],
            "first_trial_s": [r["first_trial_s"] for r in mine
                              if r.get("first_trial_s") is not None],
            "warm_wait_s": [r["warm_wait_s"] for r in mine if "warm_wait_s" in r],
            "rest_s": [r["total_s"] - r["trials_s"] - (r.get("ray_start_s") or 0.0)
                       - r.get("warm_wait_s", 0.0) for r in mine],
            "process_wall_s": [r["process_wall_s"] for r in mine],
            "peak_rss_mib": [r["peak_rss_bytes"] / 2**20 for r in mine],
            "peak_processes": [r["peak_processes"] for r in mine],
            "epochs": [sum(t["epochs"] for t in r["trials"]) for r in mine],
            "n_trials": [len(r["trials"]) for r in mine],
            "configs": [list(r["same_configs"]) for r in mine],
            "failed": sum(1 for r in runs if r["runner"] == name and "error" in r),
        }
    bare = _bench.median(rows["bare"]["trials_s"]) if "bare" in rows else math.nan
    ideal = bare / cores if bare == bare else math.nan
    return {"rows": rows, "bare_s": bare, "ideal_s": ideal, "cores": cores}


def render(summary: dict[str, Any], args: argparse.Namespace, runners: list[str]) -> str:
    rows, ideal, cores = summary["rows"], summary["ideal_s"], summary["cores"]
    header = ("runner", "trials wall, s", "trials/s", "× ideal", "Ray start-up, s",
              "warm workers wait, s", "first trial starts, s", "rest of run, s", "process wall, s", "peak RSS, MiB (processes)", "epochs",
              "configs", "runs")
    body = []
    for name in runners:
        r = rows[name]
        med = _bench.median(r["trials_s"])
        n = _bench.median(r["n_trials"]) if r["n_trials"] else math.nan
        configs = r["configs"]
        if not configs:
            same = "—"
        elif all(h == t for h, t in configs):
            same = f"same {configs[0][1]}/{configs[0][1]}"
        else:
            same = "differ: " + ", ".join(f"{h}/{t}" for h, t in configs)
        epochs = sorted(set(r["epochs"]))
        procs = max(r["peak_processes"]) if r["peak_processes"] else 0
        body.append((
            LABELS[name], _bench.spread(r["trials_s"]),
            _bench.num(n / med if med else math.nan, "{:.2f}"),
            _bench.num(med / ideal if ideal == ideal and ideal else math.nan, "{:.2f}x"),
            _bench.spread(r["ray_start_s"]) if r["ray_start_s"] else "—",
            _bench.spread(r["warm_wait_s"]) if r["warm_wait_s"] else "—",
            _bench.spread(r["first_trial_s"]) if r["first_trial_s"] else "—",
            _bench.spread(r["rest_s"]), _bench.spread(r["process_wall_s"], "{:.1f}"),
            _bench.spread(r["peak_rss_mib"], "{:.0f}") + f" ({procs})",
            "/".join(map(str, epochs)) or "—", same,
            f"{len(r['trials_s'])}" + (f", {r['failed']} failed" if r["failed"] else ""),
        ))
    if ideal == ideal:
        body.insert(0, (f"0. ideal: bare sequential time / {cores} cores",
                        _bench.num(ideal, "{:.2f}"),
                        _bench.num(args.trials / ideal, "{:.2f}"), "1.00x", "—", "—", "—",
                        "—", "—", "—", "—", "—", "—"))
    caption = (
        f"**The same {args.trials} trial configurations, {args.epochs} epochs each, under each "
        f"runner; {args.repeats} repeat(s) per runner"
        + (f" for each of seeds {', '.join(map(str, args.seeds))}" if len(args.seeds) > 1 else
           f", seed {args.seeds[0]}") + ".** "
        f"Task: scikit-learn digits (1437 train / 360 val, zero_center + normalize), MLP "
        f"64→128→10 (he init), momentum SGD (0.9), batch 64; searched: lr log-uniform "
        f"[1e-3, 1e-1], activation ∈ {{relu, leaky_relu, elu, tanh}}, batchnorm ∈ "
        f"{{true, false}}. The list is drawn once by Optuna's RandomSampler seeded as hpo seeds "
        f"round 1, so `hpo search` (`sampler: random`, 1 round × {args.trials}) trains exactly "
        f"these configurations; bare and Optuna (`enqueue_trial`) get them directly; Ray Tune "
        f"gets them as `OptunaSearch(points_to_evaluate=...)`. *configs* checks what each "
        f"runner actually trained against the list. Every trial body is "
        f"`hpo.trial.train.train_trial`. Each runner is its own subprocess; times are "
        f"median (min–max) over runs. *× ideal* = median trials wall / (bare median / "
        f"{cores} cores). *warm workers wait* = hpo only, once per study: after its sanity "
        f"checks, how long it waited for the rest of the worker processes that Ray started "
        f"with it to import torch and hpo's trainer (they start with Ray and import while data "
        f"loads and the checks run); not part of the trials wall. *first trial starts* = from "
        f"the start of the trials phase until the first trial function starts (Ray: a trial "
        f"actor starts, for Ray Tune in a new worker process whose trial then imports torch; "
        f"part of the trials wall). *rest of run* = the runner's in-process time outside Ray "
        f"start-up, the warm workers wait and the trials (data loading; hpo: sanity checks, final retraining, plots, MLflow "
        f"artifacts; Ray: shutdown). *process wall* includes Python imports. Peak RSS is the "
        f"largest sum over the runner's process tree (driver, Ray daemons and workers; "
        f"shared pages count per process), sampled every 0.2 s; in brackets the processes "
        f"at that peak.")
    return caption + "\n\n" + _bench.markdown_table(header, body)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 8 trials, 2 epochs, 1 repeat (unless given explicitly)")
    p.add_argument("--repeats", type=int, default=None, help="runs of every runner per seed "
                   "(default 3; --quick: 1)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="study seeds: each draws its own fixed list (default 0)")
    p.add_argument("--trials", type=int, default=None, help="default 64; --quick: 8")
    p.add_argument("--epochs", type=int, default=None, help="default 10; --quick: 2")
    p.add_argument("--runners", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds before a runner subprocess is killed (default 1800)")
    p.add_argument("--out", default=None,
                   help="result file stem in benchmarks/results (default framework_overhead; "
                   "--quick: framework_overhead_quick, so that a smoke run never "
                   "overwrites a full run)")
    # internal: one runner in this (sub)process
    p.add_argument("--runner", choices=RUNNERS, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.trials is None:
        args.trials = 8 if args.quick else 64
    if args.epochs is None:
        args.epochs = 2 if args.quick else 10
    if args.out is None:
        args.out = "framework_overhead_quick" if args.quick else "framework_overhead"
    if args.repeats < 1 or args.trials < 1 or args.epochs < 1:
        p.error("--repeats, --trials and --epochs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.runner:  # inside a runner subprocess
        out = RUNNER_FUNCS[args.runner](Path(args.work))
        Path(args.result).write_text(json.dumps(out, default=str))
        return 0

    runners = list(args.runners)
    if "bare" not in runners:
        runners.insert(0, "bare")  # the ideal needs it
    info = _bench.machine()
    cores = _bench.cores()
    runs: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    total = len(args.seeds) * args.repeats * len(runners)
    done = 0
    with tempfile.TemporaryDirectory(prefix="hpo-bench-overhead-") as tmp:
        for seed in args.seeds:
            spec = study_dict(seed=seed, trials=args.trials, epochs=args.epochs)
            configs = draw_configs(spec)
            for rep in range(args.repeats):
                for name in runners:  # interleaved, so slow drifts of the machine spread out
                    work = Path(tmp) / f"s{seed}-r{rep}-{name}"
                    work.mkdir()
                    (work / "job.json").write_text(json.dumps({"spec": spec,
                                                               "configs": configs}))
                    done += 1
                    print(f"[{done}/{total}] seed {seed} repeat {rep + 1}: {name} ...",
                          end="", file=sys.stderr, flush=True)
                    out = run_runner(name, work, args.timeout)
                    out.update(seed=seed, repeat=rep)
                    if "error" not in out:
                        out["same_configs"] = same_configs(configs, out["trials"])
                        print(f" trials {out['trials_s']:.1f} s, process "
                              f"{out['process_wall_s']:.1f} s, peak "
                              f"{out['peak_rss_bytes'] / 2**20:.0f} MiB, configs "
                              f"{out['same_configs'][0]}/{out['same_configs'][1]}",
                              file=sys.stderr, flush=True)
                    runs.append(out)
    summary = summarize(runs, runners, cores)
    mode = "quick smoke run" if args.quick else "full run"
    text = (f"# Framework overhead ({mode})\n\n{render(summary, args, runners)}\n\n"
            f"Machine: {cores} cores, load average at start "
            f"{', '.join(f'{x:.2f}' for x in info['load_avg_at_start'] or [])}; whole "
            f"benchmark {time.perf_counter() - t_all:.0f} s. Command: "
            f"`{_bench.command_line(argv)}`\n")
    raw = {"benchmark": "framework_overhead", "args": vars(args), "machine": info,
           "summary": summary, "runs": runs}
    md, js = _bench.write_results(args.out, text, raw)
    print(text)
    print(f"written: {md} and {js}", file=sys.stderr)
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
