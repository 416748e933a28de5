"""A 1,000-trial study: does the cost per trial stay flat, and the driver's memory bounded?

    python benchmarks/scale.py [--trials 1000] [--rounds 1] [--epochs 1] [--window 100]

One ``hpo search`` (in-process, ``hpo.cli.main``) of tiny trials: digits, MLP 64→16→10, one
epoch each, lr log-uniform and activation/batchnorm searched, random sampler, FIFO, MLflow on a
sqlite store, the journal; sanity checks off (they run once per study, as do the final retrain
and report, which come after the last trial and are outside what is measured here). All trials in one round by default, so one Ray Tune run, one Optuna
study and one callback hold every trial: what grows with the number of trials shows up as a
slope.

Measured in the driver, by a second Tune callback beside hpo's (it only reads):

* each trial's completion time, and its own compute time (Tune's ``time_total_s``: from the
  trainable's start to its last report);
* the time hpo's writer thread spends on each trial's MLflow run and journal lines;
* the driver's RSS, sampled every 0.25 s and at every completion.

Per window of ``--window`` completions: trials/s, the trials' mean compute, the *overhead per
trial* = (window wall × concurrent trials − the window's compute) / trials (what the framework
adds to each trial: scheduling, reporting, actor reuse, tracking, CPU the driver takes from
the trials), the writer's time per trial, and the driver's RSS at the window's end. A flat
overhead column and an RSS column that levels off answer the question; the table and a plot
(``scale.png``) go to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402


def study_dict(*, trials: int, rounds: int, epochs: int, seed: int) -> dict[str, Any]:
    return {
        "name": "scale",
        "seed": seed,
        "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
        "model": {"arch": "mlp", "hidden": [16], "init": "he",
                  "activation": {"choice": ["relu", "leaky_relu", "tanh"]},
                  "batchnorm": {"choice": [True, False]}},
        "train": {"epochs": epochs, "batch_size": 128, "optimizer": "momentum",
                  "lr": {"loguniform": [1e-3, 1e-1]}},
        "search": {"metric": "val_accuracy", "mode": "max", "sampler": "random",
                   "rounds": rounds, "trials_per_round": trials // rounds, "scheduler": "fifo",
                   "min_improvement": 0.0,  # every round runs: no early stop
                   "resources_per_trial": {"cpu": 1, "gpu": 0}},
        "sanity": {"enabled": False},
    }


class Probe(_bench.Sampler):
    """What the benchmark reads while the study runs: completions, writer time, driver RSS."""

    def __init__(self) -> None:
        super().__init__(interval=0.25)
        self.proc = _bench.psutil().Process()
        self.t0 = time.perf_counter()
        self.completions: list[dict[str, float]] = []
        self.writes: list[tuple[float, str, float]] = []  # (time, what, seconds)
        self.rss: list[tuple[float, int]] = []

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def sample(self) -> None:
        self.rss.append((self.now(), self.proc.memory_info().rss))

    def callback(self) -> Any:
        return _bench.tune_probe(on_complete=self._complete)

    def _complete(self, trial: Any) -> None:
        result = trial.last_result or {}
        self.completions.append({"t": self.now(),
                                 "compute_s": float(result.get("time_total_s", 0.0)),
                                 "rss": self.proc.memory_info().rss})

    def install(self) -> None:
        """Add the completion callback to every round, and time hpo's writer thread."""
        import hpo.execution.round
        import hpo.tracking.writer

        run_round, write = hpo.execution.round.run_round, hpo.tracking.writer.Writer._run

        def with_probe(*args: Any, callbacks: Any = (), **kwargs: Any) -> Any:
            return run_round(*args, callbacks=[*callbacks, self.callback()], **kwargs)

        def timed_write(cb: Any, fn: Any, args: tuple, kwargs: dict) -> None:
            start = time.perf_counter()
            try:
                write(cb, fn, args, kwargs)
            finally:
                self.writes.append((self.now(), getattr(fn, "__name__", "?"),
                                    time.perf_counter() - start))

        hpo.execution.round.run_round = with_probe  # hpo.study imports it at call time
        hpo.tracking.writer.Writer._run = timed_write


def windows(probe: Probe, *, size: int, concurrency: int) -> list[dict[str, float]]:
    done = probe.completions
    out = []
    for start in range(0, len(done) - size + 1, size):
        chunk = done[start:start + size]
        begin = done[start - 1]["t"] if start else chunk[0]["t"] - chunk[0]["compute_s"]
        wall = chunk[-1]["t"] - begin
        compute = sum(c["compute_s"] for c in chunk)
        writes = [s for t, name, s in probe.writes
                  if begin < t <= chunk[-1]["t"] and name in ("_start_run", "_end_run")]
        out.append({
            "trials": start + size, "wall_s": wall, "trials_per_s": size / wall,
            "compute_ms": 1000 * compute / size,
            "overhead_ms": 1000 * (wall * concurrency - compute) / size,
            "writer_ms": 1000 * sum(writes) / size,
            "rss_mib": chunk[-1]["rss"] / 2**20,
        })
    return out


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["trials"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(x, [r["overhead_ms"] for r in rows], "o-", label="overhead per trial")
    a.plot(x, [r["compute_ms"] for r in rows], "s-", label="compute per trial")
    a.plot(x, [r["writer_ms"] for r in rows], "^-", label="MLflow + journal writes per trial")
    a.set_xlabel("trials finished")
    a.set_ylabel("ms")
    a.set_ylim(bottom=0)
    a.legend(fontsize=8)
    a.set_title("per-trial cost, by window")
    b.plot(x, [r["rss_mib"] for r in rows], "o-")
    b.set_xlabel("trials finished")
    b.set_ylabel("MiB")
    b.set_ylim(bottom=0)
    b.set_title("driver RSS")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def slope(rows: list[dict[str, float]], key: str) -> float:
    """Least-squares change of ``key`` per 1,000 trials, over the windows."""
    import numpy as np

    x = np.array([r["trials"] for r in rows], dtype=float)
    y = np.array([r[key] for r in rows], dtype=float)
    return float(np.polyfit(x, y, 1)[0] * 1000) if len(rows) > 1 else float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="scale", help="results file stem in benchmarks/results/")
    args = p.parse_args(argv)

    import yaml

    import hpo.execution.cluster
    from hpo.cli import main as hpo_main

    work = Path(tempfile.mkdtemp(prefix="hpo-scale-"))
    study = work / "study.yaml"
    study.write_text(yaml.safe_dump(study_dict(trials=args.trials, rounds=args.rounds,
                                               epochs=args.epochs, seed=args.seed)))
    machine = _bench.machine()
    t_ray = time.perf_counter()
    hpo.execution.cluster.start_ray(None)
    ray_start = time.perf_counter() - t_ray
    probe = Probe()
    probe.install()
    with probe:
        code = hpo_main(["search", str(study), "--quiet", "--tracking-uri",
                         f"sqlite:///{work / 'mlflow.db'}", "--study-root", str(work / "runs")])
        wall = probe.now()
    import ray

    ray.shutdown()
    if code != 0:
        raise SystemExit(f"hpo search exited with {code}")
    concurrency = _bench.cores()
    rows = windows(probe, size=args.window, concurrency=concurrency)
    peak = max(r for _, r in probe.rss) / 2**20
    table = _bench.markdown_table(
        ("trials finished", "window wall, s", "trials/s", "compute/trial, ms",
         "overhead/trial, ms", "MLflow+journal writes/trial, ms", "driver RSS, MiB"),
        [(r["trials"], f"{r['wall_s']:.2f}", f"{r['trials_per_s']:.1f}",
          f"{r['compute_ms']:.1f}", f"{r['overhead_ms']:.1f}", f"{r['writer_ms']:.1f}",
          f"{r['rss_mib']:.0f}") for r in rows])
    first, rest = rows[:1], rows[1:]
    overheads = [r["overhead_ms"] for r in rest]
    summary = (
        f"- {len(probe.completions)} trials finished in {wall:.1f} s "
        f"(Ray start-up {ray_start:.1f} s before it), {concurrency} at a time.\n"
        f"- Overhead per trial after the first window: median "
        f"{_bench.spread(overheads, '{:.1f}')} ms; least-squares slope over all windows "
        f"{slope(rows, 'overhead_ms'):+.1f} ms per 1,000 trials.\n"
        f"- MLflow + journal writes per trial: slope {slope(rows, 'writer_ms'):+.1f} ms per "
        f"1,000 trials.\n"
        f"- Driver RSS: {first[0]['rss_mib']:.0f} MiB after {first[0]['trials']} trials, "
        f"{rows[-1]['rss_mib']:.0f} MiB after {rows[-1]['trials']}, peak {peak:.0f} MiB; "
        f"slope {slope(rows, 'rss_mib'):+.0f} MiB per 1,000 trials.\n"
    ) if rows else "- fewer trials than one window\n"
    markdown = (
        f"# Scale: {args.trials} trials in {args.rounds} round(s)\n\n"
        f"Digits MLP 64→16→10, {args.epochs} epoch(s) per trial, batch 128, random sampler, "
        f"FIFO, MLflow on sqlite, the journal; sanity checks off. Windows of "
        f"{args.window} completions. *overhead/trial* = (window wall × {concurrency} concurrent "
        f"trials − the window's trial compute) / trials; the first window includes the Ray "
        f"workers' start-up.\n\n{table}\n\n{summary}\n"
        f"![per-trial cost and driver memory]({args.out}.png)\n\n"
        f"Machine: {machine['cores']} cores, load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['load_avg_at_start'] or [])}. "
        f"Command: `{_bench.command_line(argv)}`\n")
    md, js = _bench.write_results(args.out, markdown, {
        "args": vars(args), "machine": machine, "wall_s": wall, "ray_start_s": ray_start,
        "windows": rows, "completions": probe.completions,
        "writes": probe.writes, "rss": probe.rss})
    plot(rows, md.with_suffix(".png"))
    print(markdown)
    print(f"written: {md}, {js}, {md.with_suffix('.png')}")


if __name__ == "__main__":
    main()
