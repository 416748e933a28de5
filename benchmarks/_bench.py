"""Helpers shared by the benchmark scripts: robust summaries, markdown tables, result files.

Benchmarks report, they never assert on time: every number is a median with its spread.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cores() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def spread(xs: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``median (min–max)``; the median alone for one sample."""
    if not xs:
        return "—"
    m = fmt.format(median(xs))
    if len(xs) == 1:
        return m
    return f"{m} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def std(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) >= 2 else math.nan


def num(x: float | None, fmt: str = "{:.4f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return fmt.format(x)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    # numbers right-aligned; the first column names the row, so it stays left-aligned
    right = [i > 0 and all(_numeric(r[i]) for r in cells[1:]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if a else c.ljust(w)
                                 for c, w, a in zip(r, widths, right)) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if a else "-" * w
                            for w, a in zip(widths, right)) + " |"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _numeric(text: str) -> bool:
    head = text.split(" ", 1)[0].rstrip("%x")
    try:
        float(head)
        return True
    except ValueError:
        return head == "—"


def quiet_mlflow() -> None:
    """Keep MLflow's per-run "View run ... at" lines and its warnings out of a benchmark's
    output (a Tracker makes the same setting; a client made before one would print)."""
    import logging

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)


def machine() -> dict[str, Any]:
    import torch

    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cores": cores(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def write_results(stem: str, markdown: str, raw: dict[str, Any],
                  out_dir: Path = RESULTS) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    js.write_text(json.dumps(raw, indent=2, default=_json_default) + "\n")
    return md, js


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def command_line(argv: Sequence[str] | None) -> str:
    """How this script was invoked, for the results file."""
    import shlex

    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", str(script), *(shlex.quote(a) for a in args)])


def tune_probe(*, on_result: Any = None, on_complete: Any = None) -> Any:
    """A Ray Tune callback for measuring: ``on_result(trial, result)`` at each result,
    ``on_complete(trial)`` at each finished trial. Tune saves its callbacks with the experiment;
    a probe saves as nothing (what it measures into need not pickle)."""
    from ray.tune import Callback

    class _Probe(Callback):  # no closure over the hooks: cloudpickle would save them with it
        def __init__(self, hooks: dict[str, Any]) -> None:
            self.hooks = hooks

        def __getstate__(self) -> dict[str, Any]:
            return {"hooks": {}}

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            if self.hooks.get("result"):
                self.hooks["result"](trial, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            if self.hooks.get("complete"):
                self.hooks["complete"](trial)

    return _Probe({"result": on_result, "complete": on_complete})


def psutil() -> Any:
    """psutil: installed, or the copy Ray vendors (``ray/thirdparty_files``, on sys.path once
    ``ray`` is imported)."""
    try:
        import psutil as module
    except ImportError:
        import ray  # noqa: F401 - puts ray/thirdparty_files on sys.path

        import psutil as module
    return module


def patched(owner: Any, **attrs: Any) -> contextlib.AbstractContextManager[None]:
    """``owner``'s attributes set to ``attrs`` for the block, the old ones back after
    (``hpo._swap.swapped``). hpo.study imports what it calls from hpo.execution at call time, so
    patching the module reaches it."""
    from hpo._swap import swapped

    return swapped(owner, **attrs)


@contextlib.contextmanager
def round_timed(run_round: Any, waits: list[float]) -> Iterator[None]:
    """``hpo search``'s rounds run through ``run_round`` (a wrapper of the real one), and each
    wait for warm workers is appended to ``waits``."""
    import hpo.execution.cluster
    import hpo.execution.round

    with patched(hpo.execution.round, run_round=run_round), \
            patched(hpo.execution.cluster, await_warm_workers=returns(
                hpo.execution.cluster.await_warm_workers, waits)):
        yield


def returns(fn: Any, into: list) -> Any:
    """``fn``, which also appends what each call returns to ``into``."""

    def recorded(*args: Any, **kwargs: Any) -> Any:
        into.append(fn(*args, **kwargs))
        return into[-1]

    return recorded


class Sampler:
    """Calls ``sample()`` every ``interval`` seconds in a thread, while in a ``with`` block."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
