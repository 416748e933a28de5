"""The MLflow store's cost per trial on sqlite: one run at a time (``Tracker``) vs ``BulkRuns``.

    python benchmarks/bulk_writes.py [--trials 2000] [--epochs 10] [--batch 256] [--repeats 3]
                                     [--one-by-one-trials 200]

Every trial is the same shape as an hpo trial of the digits MLP: 12 params, ``--epochs`` epochs
of 10 metrics (train/val loss and accuracy, gap, diverged, update ratios), the start tags
``RoundWriter`` gives (round, trial, status, kind, parent) and the end tags (status, epochs,
flags, node, attempts); one in six FAILED after 3 epochs. Six ways, each ``--repeats`` times:

- *one by one*: ``Tracker`` as ``RoundWriter`` calls it (start_run with params, buffer_metrics
  per epoch, end_run: create_run, 2 log_batch, set_terminated). At 25-35 ms a trial it gets
  ``--one-by-one-trials`` trials, written into a copy of a store that already holds the other
  ``--trials`` minus those (written in bulk): its cost at a store of ``--trials`` trials, in
  seconds instead of minutes.
- *bulk*: the trials' ``TrialRun``\\s built from the same epochs and handed to
  ``BulkRuns.write`` in batches of ``--batch``, into a new store, up to ``--trials``.
- *bulk, 4 KiB pages*: the same into a new store whose pages are sqlite's default 4 KiB, not
  the 16 KiB of a store hpo makes (``hpo.tracking.store.PAGE_SIZE``).
- *bulk, random run ids*: the same, each run named by MLflow's ``uuid.uuid4().hex`` instead of
  hpo's ids in time order (``new_run_id``).
- *the same rows, plain sqlite3*: the bulk writer's rows, built beforehand, inserted with
  ``sqlite3`` alone, a transaction per batch: sqlite's own cost on MLflow's tables, a floor.
- *bulk on a writer thread*: the same batches handed to hpo's ``Writer`` thread, as the round's
  callback would: the *calling* thread's CPU time per trial (building the runs and queueing
  them), and the wall time until the writer has drained.

Per trial: wall time in the store calls, the process's CPU time over them (one thread writes,
so it is the writer's), and the writer's trials/s. The store is a sqlite file under a temporary
folder. A calibration line (µs per row of a plain in-memory sqlite insert, no index) says how
fast this machine is while it runs: MLflow's metrics table has three indexes and a foreign key,
and a trial is ~130 rows. Writes benchmarks/results/bulk_writes.{md,json} (or into ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402 - benchmarks/ and the repository on sys.path first

from hpo.tracking.bulk import BulkRuns, TrialRun, _page_cache, _Rows, new_run_id  # noqa: E402
from hpo.tracking.store import PAGE_SIZE, Tracker, sqlite_path  # noqa: E402
from hpo.tracking.trials import BATCH_TRIALS  # noqa: E402
from hpo.tracking.writer import Writer  # noqa: E402

EXPERIMENT = "bulk-writes"
SMALL_PAGES = "bulk, 4 KiB pages"
RANDOM_IDS = "bulk, random run ids"
FLOOR = "the same rows, plain sqlite3"
ARTIFACTS = "/nonexistent/artifacts"  # the floor's runs' artifact location: never written
KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "gap", "diverged",
        "update_ratio", "update_ratio.layer1", "update_ratio.layer2", "update_ratio.classifier")
TARGET_MS, TARGET_RATE = 1.0, 1000.0  # issue #20: driver ms per trial; bulk trials/s


class Trial:
    """One trial's life as the round's callback sees it (times in ms from its start)."""

    def __init__(self, index: int, epochs: int, rng: random.Random) -> None:
        self.failed = index % 6 == 5
        self.name = f"trial 1-{index:04d}"
        self.params = {"lr": 10 ** rng.uniform(-4, -1), "weight_decay": 10 ** rng.uniform(-6, -2),
                       "dropout": rng.uniform(0, 0.5), "activation": rng.choice(["relu", "tanh"]),
                       "init": "he", "batchnorm": rng.random() < 0.5, "hidden": (64, 32),
                       "epochs": epochs, "batch_size": 64, "optimizer": "adam", "seed": index,
                       "arch": "mlp"}
        self.tags = {"hpo.round": "1", "hpo.trial": f"1-{index:04d}", "hpo.status": "running",
                     "hpo.kind": "trial"}
        self.epochs = [{k: rng.random() for k in KEYS}
                       for _ in range(3 if self.failed else epochs)]
        self.end_tags: dict[str, Any] = (
            {"hpo.status": "failed", "hpo.error": "RuntimeError: diverged at epoch 3"}
            if self.failed else
            {"hpo.status": "finished", "hpo.epochs": epochs, "hpo.flags": "none"})
        self.end_tags.update({"hpo.node": "10.0.0.7", "hpo.attempts": 1})
        self.status = "FAILED" if self.failed else "FINISHED"


def make_trials(n: int, epochs: int) -> list[Trial]:
    rng = random.Random(0)
    return [Trial(i, epochs, rng) for i in range(n)]


def trial_run(trial: Trial, parent: str, now_ms: int, run_id: str | None = None) -> TrialRun:
    """What the round would hand BulkRuns at the trial's end: every epoch's metrics, as
    Tracker.buffer_metrics keeps them (with the time each epoch was reported)."""
    metrics = [(k, float(v), step, now_ms + step) for step, epoch in enumerate(trial.epochs)
               for k, v in epoch.items()]
    return TrialRun(name=trial.name, start_time=now_ms - 100, end_time=now_ms + 50,
                    status=trial.status, parent_run_id=parent, params=trial.params,
                    metrics=metrics, tags=trial.tags, end_tags=trial.end_tags, run_id=run_id)


def new_store(folder: Path, name: str) -> tuple[str, Tracker, str]:
    uri = f"sqlite:///{folder / name}"
    tracker = Tracker(uri, EXPERIMENT)
    tracker.ensure_experiment()
    round_run = tracker.start_run("round 1", tags={"hpo.kind": "round", "hpo.round": "1"})
    return uri, tracker, round_run


def with_page_size(path: Path, size: int) -> None:
    """The store's pages made ``size`` bytes (VACUUM rewrites the file)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA page_size={size}")
        db.execute("VACUUM")


def timed(fn: Any) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def one_by_one(tracker: Tracker, round_run: str, trials: list[Trial]) -> None:
    for trial in trials:  # RoundWriter's calls, in its order
        run_id = tracker.start_run(trial.name, parent=round_run, params=trial.params,
                                   tags=trial.tags)
        for step, metrics in enumerate(trial.epochs):
            tracker.buffer_metrics(run_id, metrics, step=step)
        tracker.end_run(run_id, trial.status, tags=trial.end_tags)


def bulk(uri: str, experiment_id: str, round_run: str, trials: list[Trial], batch: int,
         run_id: Callable[[], str | None] = lambda: None) -> None:
    """``run_id()`` names each run; None: ``BulkRuns`` names it (``new_run_id``)."""
    writer = BulkRuns(uri, experiment_id)
    now = int(time.time() * 1000)
    for i in range(0, len(trials), batch):
        writer.write([trial_run(t, round_run, now, run_id()) for t in trials[i:i + batch]])


def bulk_threaded(uri: str, experiment_id: str, round_run: str, trials: list[Trial],
                  batch: int) -> dict[str, float]:
    """Batches queued to hpo's writer thread; the calling thread's CPU time and the wall time
    until the writer drained."""
    writer, thread = BulkRuns(uri, experiment_id), Writer("bench-bulk")
    wall, caller = time.perf_counter(), time.thread_time()
    now = int(time.time() * 1000)
    for i in range(0, len(trials), batch):
        thread.write(writer.write, [trial_run(t, round_run, now) for t in trials[i:i + batch]])
    caller = time.thread_time() - caller
    thread.drain()
    return {"wall_s": time.perf_counter() - wall, "caller_cpu_s": caller}


def sqlite_floor(uri: str, experiment_id: str, round_run: str, trials: list[Trial],
                 batch: int) -> dict[str, float]:
    """The bulk writer's rows (built beforehand, untimed) inserted with plain sqlite3, a
    transaction per batch: what sqlite itself costs on MLflow's tables, with nothing of
    Python's row building, SQLAlchemy or MLflow around it."""
    now = int(time.time() * 1000)
    batches = []
    for i in range(0, len(trials), batch):
        rows = _Rows()
        for t in trials[i:i + batch]:
            rows.add(trial_run(t, round_run, now), new_run_id(), int(experiment_id),
                     ARTIFACTS)
        batches.append(rows.inserts())
    db = sqlite3.connect(sqlite_path(uri), isolation_level=None)
    db.execute("PRAGMA foreign_keys=ON")  # as MLflow's engine sets it

    def insert() -> None:
        for inserts in batches:
            db.execute("BEGIN")
            for sql, table_rows in inserts:
                db.executemany(sql, table_rows)
            db.execute("COMMIT")

    with contextlib.closing(db), _page_cache(db):  # the bulk writer's page cache
        return timed(insert)


def calibration(rows: int = 100_000) -> float:
    """µs per row of a plain sqlite insert (in memory, no index): this machine's pace now."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE m (key TEXT, value REAL, timestamp INT, step INT, is_nan INT, "
               "run_uuid TEXT)")
    data = [(f"k{i % 10}", 0.5, i, i, 0, "a" * 32) for i in range(rows)]
    start = time.process_time()
    db.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?, ?)", data)
    db.close()
    return (time.process_time() - start) / rows * 1e6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--trials", type=int, default=2000, help="trials a store holds at the end")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=BATCH_TRIALS,
                   help="trials per bulk transaction (default: as many as a round's writer takes)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--one-by-one-trials", type=int, default=200,
                   help="trials the one-by-one path writes, the last ones of --trials")
    p.add_argument("--out", type=Path, default=_bench.RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _bench.quiet_mlflow()
    info = _bench.machine()
    trials = make_trials(args.trials, args.epochs)
    rows_per_trial = sum(len(t.epochs) * len(KEYS) + len(t.epochs[0]) + len(t.params)
                         + len({**t.tags, **t.end_tags}) + 3 for t in trials) / len(trials)
    tail = args.one_by_one_trials
    results: dict[str, list[dict[str, float]]] = {"one by one": [], "bulk": [],
                                                  SMALL_PAGES: [], RANDOM_IDS: [], FLOOR: [],
                                                  "bulk on a writer thread": []}
    calibrations = [calibration()]
    with tempfile.TemporaryDirectory(prefix="bulk-writes-") as tmp:
        folder = Path(tmp)
        # a store of trials - tail trials, written in bulk once, copied for each repeat
        base_uri, base, base_round = new_store(folder, "base.db")
        bulk(base_uri, base.experiment_id, base_round, trials[:args.trials - tail], args.batch)
        for r in range(args.repeats):
            shutil.copy(folder / "base.db", folder / f"one-{r}.db")
            tracker = Tracker(f"sqlite:///{folder / f'one-{r}.db'}", EXPERIMENT)
            tracker.ensure_experiment()
            t = timed(partial(one_by_one, tracker, base_round, trials[args.trials - tail:]))
            results["one by one"].append({**t, "trials": tail})
            print(f"one by one, repeat {r + 1}: {t['wall_s'] / tail * 1e3:.2f} ms/trial",
                  flush=True)

            uri, tracker, round_run = new_store(folder, f"bulk-{r}.db")
            t = timed(partial(bulk, uri, tracker.experiment_id, round_run, trials, args.batch))
            results["bulk"].append({**t, "trials": args.trials})
            print(f"bulk, repeat {r + 1}: {t['wall_s'] / args.trials * 1e3:.3f} ms/trial",
                  flush=True)

            uri, tracker, round_run = new_store(folder, f"small-{r}.db")
            with_page_size(folder / f"small-{r}.db", 4096)
            t = timed(partial(bulk, uri, tracker.experiment_id, round_run, trials, args.batch))
            results[SMALL_PAGES].append({**t, "trials": args.trials})
            print(f"{SMALL_PAGES}, repeat {r + 1}: {t['wall_s'] / args.trials * 1e3:.3f} "
                  f"ms/trial", flush=True)

            uri, tracker, round_run = new_store(folder, f"random-{r}.db")
            t = timed(partial(bulk, uri, tracker.experiment_id, round_run, trials, args.batch,
                              lambda: uuid.uuid4().hex))
            results[RANDOM_IDS].append({**t, "trials": args.trials})
            print(f"{RANDOM_IDS}, repeat {r + 1}: {t['wall_s'] / args.trials * 1e3:.3f} "
                  f"ms/trial", flush=True)

            uri, tracker, round_run = new_store(folder, f"floor-{r}.db")
            t = sqlite_floor(uri, tracker.experiment_id, round_run, trials, args.batch)
            results[FLOOR].append({**t, "trials": args.trials})
            print(f"{FLOOR}, repeat {r + 1}: {t['wall_s'] / args.trials * 1e3:.3f} "
                  f"ms/trial", flush=True)

            uri, tracker, round_run = new_store(folder, f"thread-{r}.db")
            cpu = time.process_time()
            t = bulk_threaded(uri, tracker.experiment_id, round_run, trials, args.batch)
            t["cpu_s"] = time.process_time() - cpu
            results["bulk on a writer thread"].append({**t, "trials": args.trials})
            print(f"bulk on a writer thread, repeat {r + 1}: caller "
                  f"{t['caller_cpu_s'] / args.trials * 1e3:.3f} ms/trial", flush=True)
            calibrations.append(calibration())
    info["load_avg_at_end"] = list(os.getloadavg())

    def per_trial(rows: list[dict[str, float]], key: str) -> list[float]:
        return [row[key] / row["trials"] * 1e3 for row in rows]

    table_rows, summary = [], {}
    for way, rows in results.items():
        wall, cpu = per_trial(rows, "wall_s"), per_trial(rows, "cpu_s")
        caller = per_trial(rows, "caller_cpu_s") if "caller_cpu_s" in rows[0] else []
        rate = [row["trials"] / row["wall_s"] for row in rows]
        summary[way] = {"wall_ms_per_trial": wall, "cpu_ms_per_trial": cpu,
                        "caller_cpu_ms_per_trial": caller, "trials_per_s": rate,
                        "trials": rows[0]["trials"]}
        table_rows.append((way, rows[0]["trials"], _bench.spread(wall, "{:.3f}"),
                           _bench.spread(cpu, "{:.3f}"),
                           _bench.spread(caller, "{:.3f}") if caller else "—",
                           _bench.spread(rate, "{:.0f}")))
    one = _bench.median(summary["one by one"]["wall_ms_per_trial"])
    bulk_wall = _bench.median(summary["bulk"]["wall_ms_per_trial"])
    bulk_cpu = _bench.median(summary["bulk"]["cpu_ms_per_trial"])
    caller = _bench.median(summary["bulk on a writer thread"]["caller_cpu_ms_per_trial"])
    rate = _bench.median(summary["bulk"]["trials_per_s"])
    table = _bench.markdown_table(
        ("writes", "trials", "wall ms/trial", "process CPU ms/trial", ("calling thread CPU "
         "ms/trial"), "trials/s"), table_rows)
    verdict = [
        (f"- Bulk vs one by one: {one / bulk_wall:.0f}x less wall time per trial "
        f"({one:.2f} -> {bulk_wall:.3f} ms)."),
        (f"- Target <= {TARGET_MS:g} ms of driver time per trial: the bulk writer's own time "
        f"{bulk_wall:.3f} ms wall, {bulk_cpu:.3f} ms CPU "
        f"({'met' if bulk_wall <= TARGET_MS else 'missed'}); on a writer thread the calling "
        f"thread spends {caller:.3f} ms CPU per trial "
        f"({'met' if caller <= TARGET_MS else 'missed'})."),
        (f"- Target >= {TARGET_RATE:g} trials/s of the bulk writer alone: {rate:.0f} "
        f"({'met' if rate >= TARGET_RATE else 'missed'})."),
        (f"- Pages of {PAGE_SIZE // 1024} KiB (a store hpo makes) vs sqlite's 4 KiB: "
         f"{rate:.0f} vs {_bench.median(summary[SMALL_PAGES]['trials_per_s']):.0f} trials/s."),
        (f"- Run ids in time order (`new_run_id`, UUIDv7) vs MLflow's random ones (uuid4): "
         f"{rate:.0f} vs {_bench.median(summary[RANDOM_IDS]['trials_per_s']):.0f} trials/s."),
        (f"- Calibration, a plain sqlite insert (in memory, no index): "
        f"{_bench.spread(calibrations, '{:.2f}')} µs/row of CPU over the run; a trial is "
        f"~{rows_per_trial:.0f} rows, most of them metrics rows that update three indexes and "
        f"check a foreign key."),
    ]
    text = (f"# MLflow writes per trial on sqlite: one by one vs bulk\n\n"
            f"{args.trials} trials of {args.epochs} epochs × {len(KEYS)} metrics, "
            f"{len(trials[0].params)} params, 9 tags; one in six FAILED after 3 epochs. "
            f"*one by one*: `Tracker` (create_run, log_batch, log_batch, set_terminated), the "
            f"last {tail} trials of a store that holds {args.trials - tail} already. *bulk*: "
            f"`BulkRuns.write`, {args.batch} trials a transaction, into a new store up to "
            f"{args.trials}. *on a writer thread*: the same batches queued to hpo's `Writer`; "
            f"*calling thread CPU* is what the round's thread spends building and queueing "
            f"them. Median over {args.repeats} repeats, (min–max).\n\n{table}\n\n"
            + "\n".join(verdict) +
            f"\n\nMachine: {info['cores']} cores, load average {info['load_avg_at_start']} at "
            f"the start, {info['load_avg_at_end']} at the end. Command: "
            f"`{_bench.command_line(argv)}`\n")
    raw = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": info,
           "rows_per_trial": rows_per_trial, "calibration_us_per_row": calibrations,
           "results": results, "summary": summary}
    md, js = _bench.write_results("bulk_writes", text, raw, args.out)
    print(text)
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
