"""Where one round's time goes: the driver's profile and the trial workers' timeline.

    python benchmarks/profile_round.py [--trials 64] [--epochs 10] [--pack 1]

Runs the study of ``framework_overhead.py`` (digits MLP, 64 trials × 10 epochs, MLflow on
sqlite, sanity checks on) once through ``hpo search`` in-process and reports, for its round:

* the timeline: from the round's start to the first trial function starting (a trial actor
  per concurrent trial, in a worker process that Ray started with hpo and that has imported
  torch and hpo's trainer, or in a new one for later rounds), the span in which trials run,
  and what follows the last one;
* per trial worker (Tune's ``pid`` in each result): trials, its first trial and the median of
  the others (Tune's ``time_total_s``), when the worker process started relative to the round
  (negative: before it, a warm worker), and the gaps
  between one trial's end and the next one's start on the same worker (Tune handing a reused
  actor its next trial);
* the driver: CPU seconds of the whole process during the round, the time hpo's writer thread
  spent writing MLflow runs and journal lines, and pyinstrument's profile of the main thread
  (Tune's loop), cut to the frames above ``--min-share`` of the round.

Writes ``benchmarks/results/profile_round.md`` (and ``.json`` with the raw per-trial times).
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
import framework_overhead  # noqa: E402


class Timeline:
    """A Tune callback's view of each trial: when its results arrived, its pid and compute."""

    def __init__(self) -> None:
        self.trials: dict[str, dict[str, float]] = {}
        self.process_start: dict[int, float] = {}  # pid: when the worker process started

    def callback(self) -> Any:
        return _bench.tune_probe(on_result=self._result)

    def _result(self, trial: Any, result: dict) -> None:
        now, compute = time.perf_counter(), float(result.get("time_total_s", 0.0))
        entry = self.trials.setdefault(trial.trial_id, {"start": now - compute})
        pid = int(result.get("pid", 0))
        entry.update(end=now, compute_s=compute, pid=pid)
        if pid not in self.process_start:
            created = _bench.psutil().Process(pid).create_time()
            self.process_start[pid] = created - time.time() + now


def profile(args: argparse.Namespace) -> dict[str, Any]:
    import pyinstrument
    import yaml

    import hpo.execution.cluster
    import hpo.execution.round
    import hpo.tracking.writer
    from hpo.cli import main as hpo_main

    spec = framework_overhead.study_dict(seed=0, trials=args.trials, epochs=args.epochs)
    if args.pack > 1:
        spec["search"]["pack"] = args.pack
    work = Path(tempfile.mkdtemp(prefix="hpo-profile-"))
    (work / "study.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    hpo.execution.cluster.start_ray(None)

    timeline, writes = Timeline(), []
    round_info: dict[str, Any] = {}
    run_round, write = hpo.execution.round.run_round, hpo.tracking.writer.Writer._run

    def profiled_round(*a: Any, callbacks: Any = (), **kw: Any) -> Any:
        profiler = pyinstrument.Profiler(interval=0.005)
        cpu, start = time.process_time(), time.perf_counter()
        profiler.start()
        try:
            return run_round(*a, callbacks=[*callbacks, timeline.callback()], **kw)
        finally:
            profiler.stop()
            round_info.update(start=start, end=time.perf_counter(),
                              driver_cpu_s=time.process_time() - cpu, profiler=profiler)

    def timed_write(cb: Any, fn: Any, a: tuple, kw: dict) -> None:
        begin = time.perf_counter()
        try:
            write(cb, fn, a, kw)
        finally:
            writes.append(time.perf_counter() - begin)

    waits: list[float] = []
    try:
        with _bench.round_timed(profiled_round, waits), \
                _bench.patched(hpo.tracking.writer.Writer, _run=timed_write):
            code = hpo_main(["search", str(work / "study.yaml"), "--quiet", "--tracking-uri",
                             f"sqlite:///{work / 'mlflow.db'}", "--study-root",
                             str(work / "runs")])
    finally:
        import ray

        ray.shutdown()
    if code != 0:
        raise SystemExit(f"hpo search exited with {code}")
    return {"round": round_info, "trials": timeline.trials, "writes_s": writes,
            "process_start": timeline.process_start, "warm_wait_s": sum(waits)}


def summarize(raw: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    r, trials = raw["round"], sorted(raw["trials"].values(), key=lambda t: t["start"])
    wall = r["end"] - r["start"]
    first, last = trials[0]["start"] - r["start"], trials[-1]["end"] - r["start"]
    workers: dict[int, list[dict[str, float]]] = {}
    for t in trials:
        workers.setdefault(t["pid"], []).append(t)
    rows = []
    for pid, mine in workers.items():
        gaps = [b["start"] - a["end"] for a, b in zip(mine, mine[1:])]
        rows.append((pid, len(mine), f"{raw['process_start'][pid] - r['start']:.2f}",
                     f"{mine[0]['start'] - r['start']:.2f}",
                     f"{mine[0]['compute_s']:.2f}",
                     f"{1000 * _bench.median([t['compute_s'] for t in mine[1:]]):.0f}"
                     if len(mine) > 1 else "—",
                     f"{1000 * _bench.median(gaps):.0f}" if gaps else "—",
                     f"{sum(gaps):.2f}"))
    workers_table = _bench.markdown_table(
        ("worker pid", "trials", "process started at, s", "first trial starts at, s", "first trial, s",
         "later trials, median ms", "gap between trials, median ms", "gaps, s"), rows)
    text = r["profiler"].output_text(unicode=True, color=False, show_all=True)
    lines = [line for line in text.splitlines() if _share(line) >= args.min_share * wall]
    facts = {
        "round_wall_s": wall, "first_trial_s": first, "training_span_s": last - first,
        "after_last_trial_s": wall - last, "driver_cpu_s": r["driver_cpu_s"],
        "writer_s": sum(raw["writes_s"]), "trials": len(trials),
    }
    markdown = (
        f"# One round, profiled: {args.trials} trials × {args.epochs} epochs"
        f"{f', pack {args.pack}' if args.pack > 1 else ''}\n\n"
        f"- Round wall {wall:.2f} s: the first trial function started {first:.2f} s in (the "
        f"trial actors started, in worker processes that Ray started with hpo, see *process "
        f"started*), trials ran for {last - first:.2f} s, and the round ended "
        f"{wall - last:.2f} s after the last one.\n"
        f"- Before the round hpo waited {raw['warm_wait_s']:.2f} s for those processes to "
        f"finish importing torch and hpo's trainer.\n"
        f"- The driver used {r['driver_cpu_s']:.2f} s of CPU during the round (all its threads);"
        f" hpo's writer thread spent {sum(raw['writes_s']):.2f} s on MLflow and the journal "
        f"({1000 * sum(raw['writes_s']) / max(len(trials), 1):.0f} ms a trial), off Tune's "
        f"loop.\n\n{workers_table}\n\n"
        f"The driver's main thread (Tune's loop) by pyinstrument, frames above "
        f"{args.min_share:.0%} of the round:\n\n```\n" + "\n".join(lines) + "\n```\n\n"
        f"Command: `{_bench.command_line(None)}`\n")
    return markdown, facts


def _share(line: str) -> float:
    """The seconds at the start of a pyinstrument text line (0 for other lines)."""
    for token in line.replace("│", " ").replace("├", " ").replace("└", " ").split():
        if token.strip("─").replace(".", "", 1).isdigit():
            return float(token.strip("─"))
        if token.strip("─"):
            return 0.0
    return 0.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--pack", type=int, default=1)
    p.add_argument("--min-share", type=float, default=0.02,
                   help="profile frames shown: at least this share of the round (default 0.02)")
    p.add_argument("--out", default="profile_round")
    args = p.parse_args(argv)
    raw = profile(args)
    markdown, facts = summarize(raw, args)
    md, js = _bench.write_results(args.out, markdown, {
        "args": vars(args), "machine": _bench.machine(), **facts,
        "trials": raw["trials"], "writes_s": raw["writes_s"]})
    print(markdown)
    print(f"written: {md}, {js}")


if __name__ == "__main__":
    main()
