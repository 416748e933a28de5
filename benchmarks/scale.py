"""A 1,000-trial study: does the cost per trial stay flat, and the driver's memory bounded?

    python benchmarks/scale.py [--trials 1000] [--rounds 1] [--epochs 1] [--window 100]
    python benchmarks/scale.py --pack 64 --trials 1000 --window 256 --alone \
        --out scale_pack64 [--one-by-one]
    python benchmarks/scale.py --combine OUT STEM... # median (min-max) of runs made before

With ``--pack N`` the study is the one ``benchmarks/packing.py`` trains (digits MLP 64, relu,
momentum, batch 64; lr and weight decay searched: what a pack may vary) with ``search.pack: N``;
completions then count the pack's members. ``--alone`` then trains the very trials the study
ran (their journaled configurations, in order, packs of N) with ``hpo.trial.pack.train_pack``,
in-process, one torch thread, no Ray, no MLflow: packed training alone. ``--one-by-one`` writes
the trials' MLflow runs one by one (``HPO_TRACKING_ONE_BY_ONE``) instead of in bulk.

One ``hpo search`` (in-process, ``hpo.cli.main``) of tiny trials: digits, MLP 64→16→10, one
epoch each, lr log-uniform and activation/batchnorm searched, random sampler, FIFO, MLflow on a
sqlite store, the journal; sanity checks off (they run once per study, as do the final retrain
and report, which come after the last trial and are outside what is measured here). All trials
in one round by default, so one Ray Tune run, one Optuna study and one callback hold every
trial: what grows with the number of trials shows up as a slope.

Measured in the driver, by a second Tune callback beside hpo's (it only reads):

* each trial's completion time, and its own compute time (Tune's ``time_total_s``: from the
  trainable's start to its last report);
* the time hpo's writer thread spends on each trial's MLflow run and journal lines, and the
  time ``RoundWriter``'s event methods take on Tune's loop (its thread's cost of tracking);
* the driver's RSS, sampled every 0.25 s and at every completion.

Per window of ``--window`` trials finished: trials/s, the trials' mean compute, the *overhead per
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


def study_dict(*, trials: int, rounds: int, epochs: int, seed: int, pack: int = 0
               ) -> dict[str, Any]:
    if pack:
        return {
            "name": "scale", "seed": seed,
            "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
            "model": {"arch": "mlp", "hidden": [64], "activation": "relu", "init": "he"},
            "train": {"epochs": epochs, "batch_size": 64, "optimizer": "momentum",
                      "lr": {"loguniform": [1e-3, 0.3]},
                      "weight_decay": {"loguniform": [1e-6, 1e-2]}},
            "search": {"metric": "val_accuracy", "mode": "max", "sampler": "random",
                       "rounds": rounds, "trials_per_round": trials // rounds,
                       "scheduler": "fifo", "min_improvement": 0.0, "pack": pack,
                       "resources_per_trial": {"cpu": 1, "gpu": 0}},
            "sanity": {"enabled": False},
        }
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
        self.events: list[tuple[float, str, float]] = []  # RoundWriter on Tune's loop
        self.events_cpu: list[float] = []  # the same calls' CPU time on that thread
        self.rss: list[tuple[float, int]] = []

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def sample(self) -> None:
        self.rss.append((self.now(), self.proc.memory_info().rss))

    def callback(self) -> Any:
        return _bench.tune_probe(on_complete=self._complete)

    def _complete(self, trial: Any) -> None:
        from hpo.execution.packed_search import PACK_KEY

        result = trial.last_result or {}
        members = len((trial.config or {}).get(PACK_KEY) or [None])
        self.completions.append({"t": self.now(),
                                 "compute_s": float(result.get("time_total_s", 0.0)),
                                 "members": members,
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
        self._time_events()

    def _time_events(self) -> None:
        """What RoundWriter's event methods cost the thread that runs Tune's loop."""
        from hpo.tracking.trials import RoundWriter

        def timed(name: str) -> Any:
            method = getattr(RoundWriter, name)

            def run(writer: Any, *args: Any, **kwargs: Any) -> Any:
                start, cpu = time.perf_counter(), time.thread_time()
                try:
                    return method(writer, *args, **kwargs)
                finally:
                    self.events.append((self.now(), name, time.perf_counter() - start))
                    self.events_cpu.append(time.thread_time() - cpu)
            return run

        for name in ("started", "restarted", "rekeyed", "epoch", "ended", "drain"):
            setattr(RoundWriter, name, timed(name))


def windows(probe: Probe, *, size: int, concurrency: int) -> list[dict[str, float]]:
    """Rows at the first completion that brings the trials finished to each multiple of
    ``size`` (a completion of a pack counts its members)."""
    done = probe.completions
    out: list[dict[str, float]] = []
    total, since, start, begin = 0, 0, 0, None
    for i, c in enumerate(done):
        if begin is None:
            begin = (done[i - 1]["t"] if i else c["t"] - c["compute_s"])
        total += c["members"]
        since += c["members"]
        if total < size * (len(out) + 1) and i < len(done) - 1:
            continue
        chunk = done[start:i + 1]
        end = c["t"]
        wall = end - begin
        compute = sum(x["compute_s"] for x in chunk)  # a pack's compute: once, for all members
        writes = [w for t, _, w in probe.writes if begin < t <= end]
        events = [w for t, name, w in probe.events if begin < t <= end and name != "drain"]
        out.append({
            "trials": total, "window_trials": since, "wall_s": wall,
            "trials_per_s": since / wall, "compute_ms": 1000 * compute / since,
            "overhead_ms": 1000 * (wall * concurrency - compute) / since,
            "writer_ms": 1000 * sum(writes) / since,
            "driver_events_ms": 1000 * sum(events) / since,
            "rss_mib": c["rss"] / 2**20,
        })
        since, start, begin = 0, i + 1, None
    return out


def packed_alone(work: Path, study: Path, pack: int) -> dict[str, Any]:
    """Train the study's own trials (journaled configurations, in order) in packs, in-process,
    one torch thread: (seconds, trials, trials/s)."""
    import torch

    from hpo.config.spec import load_spec
    from hpo.data.dataset import load_dataset
    from hpo.tracking.journal import Journal
    from hpo.trial.pack import train_pack

    spec = load_spec(study)
    records = sorted(Journal(work / "runs" / "scale" / "journal.jsonl").replay().trials.values(),
                     key=lambda r: (r.round, r.index))
    torch.set_num_threads(1)
    data = load_dataset(spec.data, seed=spec.seed)
    members = [dict(r.params) for r in records]
    train_pack(members[:pack], data, seed=0)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(members), pack):
        train_pack(members[i:i + pack], data, seed=spec.seed)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "trials": len(members), "trials_per_s": len(members) / seconds}


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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--combine"]:  # --combine OUT STEM...: one table of runs already made
        combine(argv[2:], argv[1])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pack", type=int, default=0, help="search.pack (0: no packing)")
    p.add_argument("--alone", action="store_true",
                   help="then train the study's trials in packs alone (needs --pack)")
    p.add_argument("--one-by-one", action="store_true",
                   help="write the trials' MLflow runs one by one, not in bulk")
    p.add_argument("--out", default="scale", help="results file stem in benchmarks/results/")
    args = p.parse_args(argv)
    if args.alone and not args.pack:
        p.error("--alone needs --pack")
    import os

    from hpo.tracking.trials import ONE_BY_ONE_ENV

    if args.one_by_one:
        os.environ[ONE_BY_ONE_ENV] = "1"
    else:
        os.environ.pop(ONE_BY_ONE_ENV, None)

    import yaml

    import hpo.execution.cluster
    from hpo.cli import main as hpo_main

    work = Path(tempfile.mkdtemp(prefix="hpo-scale-"))
    study = work / "study.yaml"
    study.write_text(yaml.safe_dump(study_dict(trials=args.trials, rounds=args.rounds,
                                               epochs=args.epochs, seed=args.seed,
                                               pack=args.pack)))
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
    trials = sum(c["members"] for c in probe.completions)
    starts = [t - d for t, name, d in probe.events if name == "started"]
    drains = [(t, d) for t, name, d in probe.events if name == "drain"]
    first = min(starts) if starts else 0.0
    last = max(t for t, _ in drains) if drains else probe.completions[-1]["t"]
    search_s = last - first  # first trial's start to its round's runs all in MLflow
    writer_total = sum(d for _, _, d in probe.writes)
    driver_total = sum(d for _, name, d in probe.events if name != "drain")
    driver_cpu = sum(c for (_, name, _), c in zip(probe.events, probe.events_cpu)
                     if name != "drain")
    alone = packed_alone(work, study, args.pack) if args.alone else None
    table = _bench.markdown_table(
        ("trials finished", "window wall, s", "trials/s", "compute/trial, ms",
         "overhead/trial, ms", "writer thread (MLflow+journal)/trial, ms",
         "Tune's loop in RoundWriter/trial, ms", "driver RSS, MiB"),
        [(r["trials"], f"{r['wall_s']:.2f}", f"{r['trials_per_s']:.1f}",
          f"{r['compute_ms']:.1f}", f"{r['overhead_ms']:.1f}", f"{r['writer_ms']:.2f}",
          f"{r['driver_events_ms']:.3f}", f"{r['rss_mib']:.0f}") for r in rows])
    rest = rows[1:]
    overheads = [r["overhead_ms"] for r in rest]
    from hpo.tracking.trials import BATCH_S, BATCH_TRIALS

    writes = ("one by one" if args.one_by_one
              else f"in bulk (sqlite: batches of up to {BATCH_TRIALS} trials or {BATCH_S:g} s)")
    summary = (
        f"- {trials} trials finished ({len(probe.completions)} Ray trials), "
        f"{concurrency} Ray trials at a time; Ray start-up {ray_start:.1f} s before it.\n"
        f"- Search: {search_s:.1f} s from the first trial's start to the round's last run "
        f"in MLflow: **{trials / search_s:.1f} trials/s**; steady windows (after the first): "
        f"median {_bench.spread([r['trials_per_s'] for r in rest], '{:.1f}')} trials/s.\n"
        + (f"- Packed training alone (the same {alone['trials']} trials, packs of "
           f"{args.pack}, one process, one torch thread, no Ray/MLflow): "
           f"{alone['seconds']:.1f} s, **{alone['trials_per_s']:.1f} trials/s**; search / "
           f"alone = **{trials / search_s / alone['trials_per_s']:.2f}x** (the search has "
           f"{concurrency} processes training at once).\n" if alone else "")
        + f"- MLflow runs written {writes}. The writer thread's time (MLflow + journal, in "
        f"the driver process, off Tune's loop): **{1000 * writer_total / trials:.2f} ms per "
        f"trial** overall; per window median "
        f"{_bench.spread([r['writer_ms'] for r in rest], '{:.2f}')} ms. Tune's loop in "
        f"RoundWriter's event methods: **{1000 * driver_total / trials:.3f} ms per trial** wall "
        f"({1000 * driver_cpu / trials:.3f} ms of that thread's CPU; the rest is waiting for "
        f"the GIL or a core).\n"
        f"- End of round: drain (the MLflow view's lag behind the trials) "
        f"{', '.join(f'{d:.2f}' for _, d in drains)} s.\n"
        f"- Overhead per trial after the first window: median "
        f"{_bench.spread(overheads, '{:.1f}')} ms; slope "
        f"{slope(rows, 'overhead_ms'):+.1f} ms per 1,000 trials.\n"
        f"- Driver RSS: {rows[0]['rss_mib']:.0f} MiB after {rows[0]['trials']} trials, "
        f"{rows[-1]['rss_mib']:.0f} MiB after {rows[-1]['trials']}, peak {peak:.0f} MiB; "
        f"**slope {slope(rows, 'rss_mib'):+.1f} MiB per 1,000 trials**.\n"
    ) if rows else "- fewer trials than one window\n"
    model = ("Digits MLP 64→64→10 relu, momentum, batch 64 (benchmarks/packing.py's), lr and "
             f"weight decay searched, search.pack {args.pack}" if args.pack else
             "Digits MLP 64→16→10, batch 128")
    markdown = (
        f"# Scale: {trials} trials in {args.rounds} round(s)\n\n"
        f"{model}, {args.epochs} epoch(s) per trial, random sampler, FIFO, MLflow on sqlite, "
        f"the journal; sanity checks off. Windows of {args.window} trials. *overhead/trial* = "
        f"(window wall × {concurrency} concurrent Ray trials − the window's Ray trial "
        f"compute) / trials; the first window includes the Ray workers' start-up.\n\n"
        f"{table}\n\n{summary}\n"
        f"![per-trial cost and driver memory]({args.out}.png)\n\n"
        f"Machine: {machine['cores']} cores, shared; load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['load_avg_at_start'] or [])}. "
        f"Command: `{_bench.command_line(argv)}`\n")
    md, js = _bench.write_results(args.out, markdown, {
        "args": vars(args), "machine": machine, "wall_s": wall, "ray_start_s": ray_start,
        "trials": trials, "search_s": search_s, "trials_per_s": trials / search_s,
        "writer_ms_per_trial": 1000 * writer_total / trials,
        "driver_events_ms_per_trial": 1000 * driver_total / trials,
        "driver_events_cpu_ms_per_trial": 1000 * driver_cpu / trials,
        "drains_s": [d for _, d in drains], "rss_slope_mib_per_1000": slope(rows, "rss_mib"),
        "alone": alone, "windows": rows, "completions": probe.completions,
        "rss": probe.rss})  # the writer's and RoundWriter's per-call times: in the windows
    plot(rows, md.with_suffix(".png"))
    print(markdown)
    print(f"written: {md}, {js}, {md.with_suffix('.png')}")


def combine(stems: list[str], out: str) -> None:
    """One table of several runs' headline figures (each a results/<stem>.json of main), and
    per figure the median (min-max) over the runs that share a configuration."""
    import json
    import statistics

    runs = [json.loads((_bench.RESULTS / f"{stem}.json").read_text()) for stem in stems]
    figures = (("trials/s (search)", "trials_per_s", "{:.1f}"),
               ("trials/s (packed alone)", "alone_per_s", "{:.1f}"),
               ("search / alone", "ratio", "{:.2f}"),
               ("writer thread ms/trial", "writer_ms_per_trial", "{:.2f}"),
               ("Tune's loop ms/trial (wall)", "driver_events_ms_per_trial", "{:.3f}"),
               ("Tune's loop ms/trial (CPU)", "driver_events_cpu_ms_per_trial", "{:.3f}"),
               ("round-end drain s", "drain_s", "{:.2f}"),
               ("RSS slope MiB/1,000 trials", "rss_slope_mib_per_1000", "{:+.1f}"))
    groups: dict[str, list[dict[str, Any]]] = {}
    for stem, run in zip(stems, runs):
        alone = run.get("alone") or {}
        run.update(stem=stem, alone_per_s=alone.get("trials_per_s", float("nan")),
                   ratio=run["trials_per_s"] / alone["trials_per_s"] if alone else float("nan"),
                   drain_s=max(run["drains_s"] or [float("nan")]))
        a = run["args"]
        key = (f"{run['trials']} trials, pack {a['pack']}, "
               f"{'one by one' if a['one_by_one'] else 'bulk'}")
        groups.setdefault(key, []).append(run)
    rows = []
    for key, group in groups.items():
        cells = []
        for _, name, fmt in figures:
            xs = [r[name] for r in group if r[name] == r[name]]  # NaN: not measured
            cells.append("—" if not xs else fmt.format(statistics.median(xs)) if len(xs) == 1
                         else f"{fmt.format(statistics.median(xs))} "
                              f"({fmt.format(min(xs))}–{fmt.format(max(xs))})")
        loads = [r["machine"]["load_avg_at_start"][0] for r in group]
        rows.append((key, len(group), *cells, ", ".join(f"{x:.1f}" for x in loads)))
    table = _bench.markdown_table(("study", "runs", *(f[0] for f in figures),
                                   "load avg (1 min) at start"), rows)
    markdown = (f"# hpo search end to end with packs: bulk MLflow writes (#20)\n\n"
                f"Median (min–max) over runs of `benchmarks/scale.py` (one process each; "
                f"their own tables: {', '.join(f'`{s}.md`' for s in stems)}).\n\n{table}\n")
    _bench.write_results(out, markdown, {"runs": stems, "groups": {
        k: [{f[1]: r[f[1]] for f in figures} | {"stem": r["stem"]} for r in g]
        for k, g in groups.items()}})
    print(markdown)


if __name__ == "__main__":
    main()
