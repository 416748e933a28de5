"""How much of a study's time goes to MLflow tracking? A real study, timed from the outside.

Runs a real study (Ray Tune trials on the bundled digits data, the real ``Tracker`` writing to
a real store) ``--repeats`` times, with every ``Tracker`` method and the Tune callback hooks
wrapped by a timer *in this script* (the library is not touched). For each repeat it reports:

- trial compute: the sum over Ray trials of Tune's ``time_total_s`` (training time in the
  workers, the cost tracking is compared against);
- tracking per trial: driver time inside ``Tracker`` calls made from the Tune callback (run
  creation with params, buffered metrics, tags, the final batched write), total and per trial;
- round wall: the wall time of the rounds, for the share of the driver's time;
- study-level tracking: the ``Tracker`` calls outside trials (study and round runs, artifacts,
  figures) and ``log_best_model`` (the MLflow model), which happen once per study.

The first study on a fresh store or server pays for its set-up (tables, connections, the
server's first requests: 5 to 10 times the steady cost per trial), so ``--warmup`` studies run
first and are not kept.

Usage (on two cores: about 50 s for sqlite, 2 minutes for both, which wrote the results file):

    .venv/bin/python benchmarks/tracking_overhead.py                  # sqlite, 3 repeats
    .venv/bin/python benchmarks/tracking_overhead.py --backend both   # sqlite and mlflow server
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.fixtures.mlflow_server import MlflowServer  # noqa: E402

#: The default study of ``make search`` (search_spaces/digits_mlp.yaml), one round of it.
STUDY: dict[str, Any] = {
    "name": "tracking-overhead",
    "seed": 0,
    "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
    "model": {"arch": "mlp", "hidden": [128, 64],
              "activation": {"choice": ["relu", "leaky_relu", "elu", "tanh"]},
              "init": {"choice": ["xavier", "he"]}, "batchnorm": {"choice": [True, False]}},
    "train": {"epochs": 15, "batch_size": 64, "optimizer": "momentum",
              "lr": {"loguniform": [1e-3, 0.3]}, "weight_decay": {"loguniform": [1e-6, 1e-2]}},
    "search": {"rounds": 1, "trials_per_round": 8, "sampler": "random"},
    "sanity": {"enabled": False},  # not tracking: the checks train in the driver
}
SUMMARY = "Median over the repeats, (min–max) in brackets."
NOTES = """
- *trial compute*: the sum of Tune's `time_total_s` over the trials (training in the workers).
- *tracking in trials*: driver time inside `Tracker` calls made from the Tune callback (create the
  run with its params, buffer each epoch, one batched metric write, tags, end); *calls per
  trial* counts those calls (buffering an epoch is one, and writes nothing).
- *% of round wall*: the same time as a share of the rounds' wall time. The callback runs in the
  driver while the trials train in their workers, so this is the share of the driver's time
  that tracking takes, not a delay added to every trial.
- *study-level tracking* and *model logging* happen once per study, whatever the number of
  trials: the study and round runs, study.yaml, best.yaml, report.md, the plots, and the MLflow
  model with its signature.
"""
TRIAL_HOOKS = ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error")


# -- timers --------------------------------------------------------------------------------


@dataclass
class Timings:
    """One study's clock readings, in seconds."""

    tracker: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # phase ->
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # phase -> count
    trial_compute: dict[str, float] = field(default_factory=dict)  # Ray trial id -> time_total_s
    rounds_wall: float = 0.0
    model_logging: float = 0.0
    study_wall: float = 0.0
    trials: int = 0


class Clock:
    """Wraps the library's methods for the length of a ``with``; restores them after."""

    def __init__(self) -> None:
        self.now: Timings = Timings()
        self._depth = 0  # Tracker methods call each other: time only the outermost call
        self._in_trial_hook = 0

    def tracker_method(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phase = "trial" if self._in_trial_hook else "study"
                self.now.tracker[phase] += time.perf_counter() - start
                self.now.calls[phase] += 1
                self._depth -= 1
        return timed

    def trial_hook(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def hooked(callback: Any, *args: Any, **kwargs: Any) -> Any:
            if fn.__name__ == "on_trial_result":
                trial, result = kwargs.get("trial"), kwargs.get("result", {})
                if trial is not None and "time_total_s" in result:
                    self.now.trial_compute[trial.trial_id] = float(result["time_total_s"])
            self._in_trial_hook += 1
            try:
                return fn(callback, *args, **kwargs)
            finally:
                self._in_trial_hook -= 1
        return hooked

    def wall(self, attribute: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self.now, attribute,
                        getattr(self.now, attribute) + time.perf_counter() - start)
        return timed

    @contextmanager
    def installed(self) -> Iterator[Clock]:
        import hpo.execution.callback
        import hpo.study.final
        import hpo.tracking.store
        import hpo.execution.round

        patches: list[tuple[Any, str, Any]] = []

        def patch(owner: Any, name: str, new: Any) -> None:
            patches.append((owner, name, owner.__dict__[name]))
            setattr(owner, name, new)

        tracker = hpo.tracking.store.Tracker
        for name, fn in list(vars(tracker).items()):
            if callable(fn) and not name.startswith("_"):
                patch(tracker, name, self.tracker_method(fn))
        for name in TRIAL_HOOKS:
            if name in vars(hpo.execution.callback.StudyCallback):
                patch(hpo.execution.callback.StudyCallback, name,
                      self.trial_hook(vars(hpo.execution.callback.StudyCallback)[name]))
        # hpo.study.run imports these inside its functions, at call time: patching the modules works
        patch(hpo.execution.round, "run_round",
              self.wall("rounds_wall", hpo.execution.round.run_round))
        patch(hpo.study.final, "log_best_model",
              self.wall("model_logging", hpo.study.final.log_best_model))
        try:
            yield self
        finally:
            for owner, name, original in reversed(patches):
                setattr(owner, name, original)


# -- stores --------------------------------------------------------------------------------


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """``mlflow server`` on ``folder``'s sqlite store (artifacts proxied there): its URL."""
    server = MlflowServer(folder, f"sqlite:///{folder / 'server.db'}").start()
    try:
        yield server.url
    finally:
        server.stop()


# -- the benchmark ---------------------------------------------------------------------------


def one_study(clock: Clock, spec: Any, uri: str, folder: Path) -> Timings:
    from hpo.study.run import run_study

    clock.now = Timings()
    start = time.perf_counter()
    result = run_study(spec, tracking_uri=uri, quiet=True, study_root=folder / "hpo_runs")
    clock.now.study_wall = time.perf_counter() - start
    clock.now.trials = len(result.records)
    return clock.now


def row(backend: str, t: Timings) -> dict[str, float]:
    compute = sum(t.trial_compute.values())
    return {
        "trials": t.trials,
        "trial compute s": compute,
        "tracking in trials s": t.tracker["trial"],
        "ms per trial": 1000 * t.tracker["trial"] / max(t.trials, 1),
        "calls per trial": t.calls["trial"] / max(t.trials, 1),
        "% of trial compute": 100 * t.tracker["trial"] / compute if compute else float("nan"),
        "% of round wall": 100 * t.tracker["trial"] / t.rounds_wall if t.rounds_wall else 0.0,
        "study-level tracking s": t.tracker["study"],
        "model logging s": t.model_logging,
        "study wall s": t.study_wall,
    }


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.3g}"
    return f"{median:.3g} ({min(values):.3g}–{max(values):.3g})"


def markdown(results: dict[str, list[dict[str, float]]], args: argparse.Namespace,
             spec: Any) -> str:
    import mlflow
    import ray
    import torch

    columns = list(next(iter(results.values()))[0])
    command = (f"benchmarks/tracking_overhead.py --backend {args.backend} --repeats "
               f"{args.repeats} --warmup {args.warmup} --trials {args.trials} --epochs "
               f"{args.epochs}")
    study = (f"{args.repeats} studies per backend after {args.warmup} warm-up study not kept "
             f"(server: one `mlflow server` on loopback, "
             f"sqlite behind it, for all its studies), each {args.trials} trials of the default "
             f"digits MLP (hidden {list(spec.model['hidden'])}, {args.epochs} epochs) in one "
             f"round on a local Ray")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
               f"{platform.python_version()}, torch {torch.__version__}, Ray {ray.__version__}, "
               f"MLflow {mlflow.__version__}; run "
               f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    lines = [
        "# Tracking overhead",
        "",
        f"`{command}`: {study}; every `Tracker` method timed from the outside. {SUMMARY}",
        "",
        f"Machine: {machine}.",
        "",
        "| backend | " + " | ".join(columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for backend, rows in results.items():
        cells = [spread([r[c] for r in rows]) for c in columns]
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    lines += ["", *NOTES.strip().splitlines(), "", "Raw rows (one per study):", "",
              "| backend | repeat | " + " | ".join(columns) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |"]
    for backend, rows in results.items():
        for i, r in enumerate(rows, 1):
            lines.append(f"| {backend} | {i} | " + " | ".join(f"{r[c]:.4g}" for c in columns)
                         + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "server", "both"], default="sqlite")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1,
                        help="studies run first and not kept (the first study on a fresh store "
                        "or server pays for its set-up)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "tracking_overhead.md")
    args = parser.parse_args(argv)

    import ray

    from hpo.config.spec import parse_spec
    from hpo.execution.cluster import start_ray

    raw = {**STUDY, "search": {**STUDY["search"], "trials_per_round": args.trials},
           "train": {**STUDY["train"], "epochs": args.epochs}}
    spec = parse_spec(raw)
    backends = ["sqlite", "server"] if args.backend == "both" else [args.backend]
    clock = Clock()
    results: dict[str, list[dict[str, float]]] = {}
    start_ray(None)  # once: Ray's start-up is not tracking
    try:
        with clock.installed(), tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp:
            for backend in backends:
                results[backend] = []
                with ExitStack() as stack:
                    server = (stack.enter_context(mlflow_server(Path(tmp)))
                              if backend == "server" else None)  # one for all its repeats
                    for i in range(-args.warmup, args.repeats):  # i < 0: warm-up, not kept
                        folder = Path(tmp) / f"{backend}-{i}"
                        folder.mkdir()
                        uri = server or f"sqlite:///{folder / 'mlflow.db'}"
                        study = dataclasses.replace(spec, name=f"{spec.name}-{backend}-{i + 1}")
                        t = one_study(clock, study, uri, folder)
                        r = row(backend, t)
                        if i < 0:
                            print(f"{backend} warm-up: {r['ms per trial']:.1f} ms tracking per "
                                  f"trial (not kept)", flush=True)
                            continue
                        results[backend].append(r)
                        print(f"{backend} #{i + 1}: {r['ms per trial']:.1f} ms tracking per "
                              f"trial, {r['% of trial compute']:.1f}% of trial compute, "
                              f"{r['% of round wall']:.1f}% of round wall", flush=True)
    finally:
        ray.shutdown()
    text = markdown(results, args, spec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
