"""Coarse-to-fine vs one round of random search vs TPE, at equal trial budget, over seeds.

    python benchmarks/coarse_to_fine.py [--quick] [--repeats N] [--seeds 0 1 2 3 4]

Every study is a real ``hpo`` study (``hpo.study.run.run_study``: Ray Tune + Optuna + MLflow) run
in-process against a throwaway sqlite tracking store in a temporary folder. One local Ray is
started once for the whole benchmark (its start-up is reported in the caption, not in the
per-study wall times).

Two spaces for the learning rate of plain SGD on a digits MLP (DESIGN.md, "Coarse-to-fine,
precisely"): a well-specified one, ``loguniform [1e-4, 1]``, that holds the optimum, and a
misspecified one, ``loguniform [1e-7, 1e-5]``, four to five decades below it, where every trial
of a single round stays near chance. Strategies, each with the same total number of trials:

* ``random``: one round of ``budget`` random trials;
* ``c2f RxW``: ``R`` rounds of ``budget / R`` random trials, refined coarse-to-fine, ranges
  pushed ``W``-fold outward when the best trial sits on an edge (``search.widen: W``);
* ``tpe``: one round of ``budget`` trials of Optuna's TPE (hpo's default start-up: a third of
  the round, at most 10, random).

Per (space, strategy) the table gives the mean, standard deviation, min and max over seeds (and
repeats) of the study's best validation accuracy, and the median (min–max) wall time of a study.
The seed changes everything a study seeds: the train/val split, the sampler and the weights.
The raw numbers (per study: best accuracy and lr, per-round bests and ranges, statuses, wall
time) go to ``benchmarks/results/coarse_to_fine.json``, the table to ``coarse_to_fine.md``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402

SPACES = {
    "well-specified": (1e-4, 1.0),
    "misspecified": (1e-7, 1e-5),
}
LR_BOUNDS = (1e-8, 10.0)


@dataclass(frozen=True)
class Strategy:
    key: str
    sampler: str
    rounds: int
    per_round: int
    widen: float = 10.0

    @property
    def label(self) -> str:
        if self.rounds == 1:
            return f"{'random' if self.sampler == 'random' else 'TPE'}, 1×{self.per_round}"
        return f"coarse-to-fine, {self.rounds}×{self.per_round}, widen {self.widen:g}"

    @property
    def budget(self) -> int:
        return self.rounds * self.per_round


def strategies(budget: int, c2f: list[tuple[int, float]]) -> list[Strategy]:
    out = [Strategy("random", "random", 1, budget)]
    for rounds, widen in c2f:
        per_round = budget // rounds
        if per_round < 1:
            raise SystemExit(f"--c2f {rounds}:{widen:g}: {rounds} rounds do not fit a budget of "
                             f"{budget} trials")
        out.append(Strategy(f"c2f-{rounds}x{per_round}-w{widen:g}", "random", rounds, per_round,
                            widen))
    out.append(Strategy("tpe", "tpe", 1, budget))
    return out


def study_dict(name: str, seed: int, lr: tuple[float, float], strategy: Strategy, *,
               epochs: int, hidden: list[int]) -> dict[str, Any]:
    return {
        "name": name,
        "seed": seed,
        "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
        "model": {"arch": "mlp", "hidden": hidden, "activation": "relu", "init": "he",
                  "batchnorm": False, "dropout": 0.0},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": "sgd", "weight_decay": 0.0,
                  "lr": {"loguniform": list(lr)}},
        "search": {"metric": "val_accuracy", "mode": "max", "sampler": strategy.sampler,
                   "rounds": strategy.rounds, "trials_per_round": strategy.per_round,
                   "widen": strategy.widen, "bounds": {"lr": list(LR_BOUNDS)},
                   # the least early stopping hpo allows: only a round that widened nothing
                   # and got worse than an earlier round ends the study before its budget
                   "min_improvement": 0.0},
        "gap": {"adapt_regularization": False},  # lr is the only searched parameter
        "sanity": {"enabled": False},
    }


def run_one(spec_dict: dict[str, Any], *, uri: str, root: Path) -> dict[str, Any]:
    from hpo.config.spec import parse_spec
    from hpo.study.run import run_study

    spec = parse_spec(spec_dict)
    t0 = time.perf_counter()
    result = run_study(spec, tracking_uri=uri, quiet=True, study_root=root)
    wall = time.perf_counter() - t0
    statuses: dict[str, int] = {}
    for r in result.records:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    best = result.best
    return {
        "best_val_accuracy": best.metric("val_accuracy"),
        "best_lr": best.sampled.get("lr"),
        "best_trial": best.name,
        "trials": len(result.records),
        "rounds_run": len(result.rounds),
        "round_best": [s.best_metric for s in result.rounds],
        "round_lr_range": [[s.ranges["lr"].low, s.ranges["lr"].high] for s in result.rounds],
        "round_changes": [[c.reason for c in s.changes] for s in result.rounds],
        "statuses": statuses,
        "stopped_early": result.stopped_early,
        "wall_s": wall,
    }


def summarize(runs: list[dict[str, Any]], strats: list[Strategy]) -> list[dict[str, Any]]:
    rows = []
    for space in SPACES:
        for s in strats:
            mine = [r for r in runs if r["space"] == space and r["strategy"] == s.key
                    and r.get("error") is None]
            accs = [r["best_val_accuracy"] for r in mine if r["best_val_accuracy"] is not None]
            walls = [r["wall_s"] for r in mine]
            rows.append({
                "space": space, "strategy": s.key, "label": s.label,
                "mean": statistics.fmean(accs) if accs else math.nan, "std": _bench.std(accs),
                "min": min(accs) if accs else math.nan, "max": max(accs) if accs else math.nan,
                "n": len(accs), "seeds": sorted({r["seed"] for r in mine}),
                "wall": walls, "trials": statistics.fmean(r["trials"] for r in mine) if mine
                else math.nan,
                "failed": sum(1 for r in runs if r["space"] == space and r["strategy"] == s.key
                              and r.get("error") is not None),
            })
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace, ray_start: float,
           strats: list[Strategy]) -> str:
    header = ("space", "strategy", "mean best val_accuracy", "std", "min", "max", "seeds",
              "trials/study", "wall time/study, s: median (min–max)")
    body = []
    for r in rows:
        seeds = ",".join(str(s) for s in r["seeds"])
        n = f"{r['n']}" + (f" ({seeds}" + (f"; ×{args.repeats}" if args.repeats > 1 else "")
                           + ")")
        if r["failed"]:
            n += f", {r['failed']} failed"
        body.append((r["space"], r["label"], _bench.num(r["mean"]), _bench.num(r["std"]),
                     _bench.num(r["min"]), _bench.num(r["max"]), n,
                     _bench.num(r["trials"], "{:g}"), _bench.spread(r["wall"], "{:.1f}")))
    lo_w, hi_w = SPACES["well-specified"]
    lo_m, hi_m = SPACES["misspecified"]
    c2f = "; ".join(f"{s.rounds} rounds × {s.per_round} trials with `search.widen: {s.widen:g}`"
                    for s in strats if s.rounds > 1)
    plural = "s" if len(args.seeds) > 1 else ""
    caption = (
        f"**Best validation accuracy at equal trial budget ({args.budget} trials per study), "
        f"over seed{plural} {', '.join(map(str, args.seeds))}"
        + (f", each repeated {args.repeats}×" if args.repeats > 1 else "") + ".** "
        f"Task: scikit-learn digits (1437 train / 360 val, `preprocess: [zero_center, "
        f"normalize]`), MLP 64→{'→'.join(map(str, args.hidden))}→10, relu, he init, no "
        f"batchnorm, plain SGD (no momentum), batch 64, {args.epochs} epochs, no weight decay. "
        f"Only `train.lr` is searched: well-specified `loguniform [{lo_w:g}, {hi_w:g}]`, "
        f"misspecified `loguniform [{lo_m:g}, {hi_m:g}]`; `search.bounds.lr: "
        f"[{LR_BOUNDS[0]:g}, {LR_BOUNDS[1]:g}]`. Random and TPE: one round of {args.budget} "
        f"trials (TPE starts with max(2, min(10, budget // 3)) random trials, hpo's "
        f"setting). Coarse-to-fine "
        f"(random sampler in every round, hpo defaults `top_fraction: 0.25`, `edge: 0.1`; "
        f"`min_improvement: 0`): {c2f}. hpo still stops a study early when a round widened "
        f"nothing and its best fell below an earlier round's, so a coarse-to-fine study may "
        f"spend less than the budget: *trials/study* is the mean it actually ran. "
        f"`sanity.enabled: false`; the search metric is `val_accuracy` (max); diverged "
        f"trials never count as best. Each study runs through `hpo.study.run.run_study` "
        f"in-process (Ray Tune, 1 CPU per trial, "
        f"{_bench.cores()} cores; MLflow on a throwaway sqlite store); Ray was started once "
        f"({ray_start:.1f} s), outside the per-study wall times. "
        f"std is the sample standard deviation over seeds.")
    return caption + "\n\n" + _bench.markdown_table(header, body)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: seed 0, budget 6, 2 epochs, one coarse-to-fine variant "
                   "(3:1000), unless given explicitly")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every (space, strategy, seed) this many times (default 1; the "
                   "seeds are the replicates that matter for accuracy)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="study seeds (default 0 1 2 3 4; --quick: 0)")
    p.add_argument("--budget", type=int, default=None, help="trials per study (default 24; "
                   "--quick: 6)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 5; "
                   "--quick: 2)")
    p.add_argument("--hidden", type=int, nargs="+", default=[64], help="MLP widths (default 64)")
    p.add_argument("--c2f", nargs="+", default=None, metavar="ROUNDS:WIDEN",
                   help="coarse-to-fine variants (default: 3:1000 4:100, i.e. 3 rounds widening "
                   "1000-fold and 4 rounds widening 100-fold; --quick: 3:1000)")
    p.add_argument("--spaces", nargs="+", choices=list(SPACES), default=list(SPACES))
    p.add_argument("--out", default=None, help="result file stem in benchmarks/results "
                   "(default coarse_to_fine; --quick: coarse_to_fine_quick, so that a smoke "
                   "run never overwrites a full run)")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2, 3, 4]
    if args.budget is None:
        args.budget = 6 if args.quick else 24
    if args.epochs is None:
        args.epochs = 2 if args.quick else 5
    if args.c2f is None:
        args.c2f = ["3:1000"] if args.quick else ["3:1000", "4:100"]
    if args.out is None:
        args.out = "coarse_to_fine_quick" if args.quick else "coarse_to_fine"
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    try:
        args.c2f_parsed = [(int(r), float(w)) for r, w in (v.split(":") for v in args.c2f)]
    except ValueError:
        p.error("--c2f takes ROUNDS:WIDEN pairs, e.g. 3:1000")
    if any(r < 2 or w <= 1 for r, w in args.c2f_parsed):
        p.error("--c2f: ROUNDS >= 2 and WIDEN > 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    strats = strategies(args.budget, args.c2f_parsed)
    import ray

    from hpo.tracking.store import Tracker
    from hpo.execution.round import start_ray

    runs: list[dict[str, Any]] = []
    total = len(args.spaces) * len(strats) * len(args.seeds) * args.repeats
    info = _bench.machine()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpo-bench-c2f-") as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        Tracker(uri, "warm-up").check()  # create the store's schema before any timing
        t0 = time.perf_counter()
        start_ray(None)  # run_study reuses it and leaves it running
        ray_start = time.perf_counter() - t0
        try:
            done = 0
            for rep in range(args.repeats):
                for seed in args.seeds:
                    for space in args.spaces:
                        for s in strats:
                            done += 1
                            name = f"{space}-{s.key}-s{seed}-r{rep}"
                            d = study_dict(name, seed, SPACES[space], s, epochs=args.epochs,
                                           hidden=args.hidden)
                            row: dict[str, Any] = {"space": space, "strategy": s.key,
                                                   "label": s.label, "seed": seed,
                                                   "repeat": rep}
                            try:
                                row.update(run_one(d, uri=uri, root=root / "studies"))
                            except Exception as exc:  # noqa: BLE001 - report, keep going
                                row.update(error=f"{type(exc).__name__}: {exc}",
                                           best_val_accuracy=None, wall_s=math.nan, trials=0)
                            runs.append(row)
                            acc = row.get("best_val_accuracy")
                            print(f"[{done}/{total}] {space:14s} {s.label:42s} seed {seed}: "
                                  f"best val_accuracy {_bench.num(acc)}"
                                  f"  ({row['wall_s']:.1f} s)"
                                  + (f"  ERROR {row['error']}" if row.get("error") else ""),
                                  file=sys.stderr, flush=True)
        finally:
            ray.shutdown()
    rows = summarize(runs, strats)
    rows = [r for r in rows if r["space"] in args.spaces]
    markdown = render(rows, args, ray_start, strats)
    mode = "quick smoke run" if args.quick else "full run"
    text = (f"# Coarse-to-fine vs random vs TPE ({mode})\n\n{markdown}\n\n"
            f"Machine: {info['cores']} cores, load average at start "
            f"{', '.join(f'{x:.2f}' for x in info['load_avg_at_start'] or [])}; "
            f"whole benchmark {time.perf_counter() - t_all:.0f} s. Command: "
            f"`{_bench.command_line(argv)}`\n")
    raw = {"benchmark": "coarse_to_fine", "args": {k: v for k, v in vars(args).items()},
           "machine": info, "ray_start_s": ray_start,
           "strategies": [s.__dict__ | {"label": s.label} for s in strats],
           "spaces": SPACES, "lr_bounds": LR_BOUNDS, "summary": rows, "runs": runs}
    md, js = _bench.write_results(args.out, text, raw)
    print(text)
    print(f"written: {md} and {js}", file=sys.stderr)
    return 0 if all(r.get("error") is None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
