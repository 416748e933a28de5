"""Time to result: the whole ``hpo search`` command against the ideal, split where it goes.

    python benchmarks/time_to_result.py [--repeats N] [--studies default 48x30] [--quick]

Each repeat runs ``hpo search STUDY --quiet`` as a user does (a new process, a new sqlite store
in a new folder, a Ray of its own), timed from just before the process starts to its exit. The
split comes from what the study leaves: the MLflow runs' start and end times and the journal.

* *start to study run*: the process starts, imports, loads the data, opens the store and starts
  Ray, and the study's MLflow run begins.
* *study run to first trial*: the sanity checks, the first round's run, and the trial workers
  importing torch.
* *trials*: from the first trial's start to the last trial's end, between-round work included
  (*of which between rounds*: each later round's first trial start minus the previous round's
  last trial end: the round's table, plots and refined ranges, and the next round's workers).
* *last trial to exit*: the final retraining and ensemble, the best model, plots, the report.

The *ideal* is the same trials (the configurations the study ran, each for the epochs it trained)
in the bare loop of ``benchmarks/trial_cost.py`` (plain PyTorch, one thread, one validation pass
per epoch), sequentially in one process, divided by the cores. It is timed right after each
``hpo search`` run, on that run's trials, and the studies take turns within each repeat, so that
the command and its ideal share the machine's state of the moment. *trial / bare* is the median,
over a run's trials, of a trial's MLflow duration over the bare loop's time on its configuration.

Studies: ``default`` is ``search_spaces/digits_mlp.yaml`` (what ``make search`` runs: sanity
checks, 3 rounds of 16 trials of 15 epochs); ``48x30`` is the same study file with one round of
48 trials of 30 epochs and no sanity checks. A new store is a copy of MLflow's tables that hpo
makes once per MLflow version (``~/.cache/hpo``): the first repeat on a machine that never ran
hpo pays MLflow's migrations once; every repeat here runs after a warm-up that made it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import _bench  # noqa: E402

STEM = "time_to_result"
DEFAULT_STUDY = HERE.parent / "search_spaces" / "digits_mlp.yaml"


def study_text(name: str, *, quick: bool) -> str:
    """The study file of ``name``: the default study, or its one-round 48 x 30 variant."""
    import yaml

    study = yaml.safe_load(DEFAULT_STUDY.read_text())
    if name == "48x30":
        study["train"]["epochs"] = 30
        study["search"].update(rounds=1, trials_per_round=48)
        study["sanity"] = {"enabled": False}
    if quick:  # a smoke run of the script, not a measurement
        study["train"]["epochs"] = 2
        study["search"].update(rounds=min(2, study["search"]["rounds"]), trials_per_round=4)
    return yaml.safe_dump(study, sort_keys=False)


def run_once(name: str, *, quick: bool, timeout: float) -> dict[str, Any]:
    """One ``hpo search --quiet`` of study ``name`` in a new folder; its phases in seconds."""
    with tempfile.TemporaryDirectory(prefix="hpo-ttr-") as tmp:
        folder = Path(tmp)
        start, end = search(folder, name, quick=quick, timeout=timeout)
        return {"total": end - start, **_phases(folder, start, end),
                "trials_run": _journal_trials(folder)}


def search(folder: Path, name: str, *, quick: bool, timeout: float,
           code: Path | None = None) -> tuple[float, float]:
    """``hpo search study.yaml --quiet`` of study ``name`` in ``folder``, as a user runs it
    (with ``code``, a checkout, first on the path when given); its start and end times."""
    (folder / "study.yaml").write_text(study_text(name, quick=quick))
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
           **({"PYTHONPATH": str(code)} if code is not None else {})}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "hpo", "search", "study.yaml", "--quiet"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    end = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"hpo search ({code or 'this checkout'}) exited {proc.returncode}: "
                           f"{proc.stderr[-2000:]}")
    return start, end


def _phases(folder: Path, start: float, end: float) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    runs = [r for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id], max_results=10000)]
    kind = {r.info.run_id: r.data.tags.get("hpo.kind") for r in runs}
    study = next(r for r in runs if kind[r.info.run_id] == "study")
    trials = [r for r in runs if kind[r.info.run_id] == "trial"]
    t_start = {r.info.run_id: r.info.start_time / 1000 for r in trials}
    t_end = {r.info.run_id: r.info.end_time / 1000 for r in trials}
    first, last = min(t_start.values()), max(t_end.values())
    by_round: dict[str, list[str]] = {}
    for r in trials:
        by_round.setdefault(r.data.tags["hpo.round"], []).append(r.info.run_id)
    spans = sorted((min(t_start[i] for i in ids), max(t_end[i] for i in ids))
                   for ids in by_round.values())
    gaps = sum(b[0] - a[1] for a, b in zip(spans, spans[1:]))
    return {
        "start_to_study_run": study.info.start_time / 1000 - start,
        "study_run_to_first_trial": first - study.info.start_time / 1000,
        "trials": last - first,
        "between_rounds": gaps,
        "last_trial_to_exit": end - last,
        "trial_seconds": {r.data.tags["hpo.trial"]: t_end[r.info.run_id] - t_start[r.info.run_id]
                          for r in trials},
    }


def _journal_trials(folder: Path) -> dict[str, dict[str, Any]]:
    """Each trial's resolved configuration and epochs trained, by its name (``1-04``)."""
    journals = list((folder / "hpo_runs").glob("*/journal.jsonl"))
    out = {}
    for line in journals[0].read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "trial_end":
            rec = event["record"]
            out[f"{rec['round']}-{rec['index']:02d}"] = {"params": rec["params"],
                                                         "epochs": len(rec["history"])}
    return out


def bare_times(trials: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each trial's configuration, for the epochs it trained, in the bare loop (one thread)."""
    import torch

    from hpo.config.spec import parse_spec
    from hpo.data.dataset import load_dataset
    from trial_cost import bare_loop

    import yaml

    torch.set_num_threads(1)
    spec = parse_spec(yaml.safe_load(DEFAULT_STUDY.read_text()))
    data = load_dataset(spec.data, seed=spec.seed)
    out = {}
    for name, trial in trials.items():
        params = {**trial["params"], "hidden": tuple(trial["params"]["hidden"]),
                  "epochs": max(1, trial["epochs"])}
        start = time.perf_counter()
        bare_loop(params, data)
        out[name] = time.perf_counter() - start
    return out


PHASES = [("start_to_study_run", "process start to the study's MLflow run"),
          ("study_run_to_first_trial", "study run to the first trial"),
          ("trials", "first trial start to last trial end"),
          ("between_rounds", "  of which between rounds"),
          ("last_trial_to_exit", "last trial end to exit"),
          ("total", "whole command")]


def summarize(name: str, runs: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Each figure per repeat: a run against the bare loop timed right after it."""
    ideals = [sum(r["bare"].values()) / cores for r in runs]
    return {"study": name, "ideal": ideals,
            "phases": {k: [r[k] for r in runs] for k, _ in PHASES},
            "total_over_ideal": [r["total"] / ideal for r, ideal in zip(runs, ideals)],
            "trial_over_bare": [_bench.median([t / r["bare"][k]
                                               for k, t in r["trial_seconds"].items()
                                               if k in r["bare"]]) for r in runs],
            "trial_median": [_bench.median(list(r["trial_seconds"].values())) for r in runs],
            "bare_median": [_bench.median(list(r["bare"].values())) for r in runs]}


def render(summaries: list[dict[str, Any]], args: argparse.Namespace, loads: list[float]
           ) -> str:
    lines = ["# Time to result: the whole `hpo search` command", "",
             "Seconds, median (min–max) over the repeats; each repeat a new process, folder and "
             "sqlite store (see the script's docstring for where each phase starts and ends).",
             f"Command: `{_bench.command_line(None)}`.", ""]
    for s in summaries:
        rows = [[label, _bench.spread(s["phases"][k], "{:.1f}")] for k, label in PHASES]
        rows.append(["ideal: the same trials in the bare loop / cores",
                     _bench.spread(s["ideal"], "{:.1f}")])
        rows.append(["whole command / ideal", _bench.spread(s["total_over_ideal"], "{:.2f}x")])
        rows.append(["a trial / the bare loop on its configuration (median over trials)",
                     _bench.spread(s["trial_over_bare"], "{:.2f}x")])
        rows.append(["a trial, median seconds (MLflow start to end)",
                     _bench.spread(s["trial_median"], "{:.2f}")])
        rows.append(["the bare loop, median seconds", _bench.spread(s["bare_median"], "{:.2f}")])
        lines += [f"## study `{s['study']}`", "", _bench.markdown_table(["", "seconds"], rows), ""]
    m = _bench.machine()
    lines.append(f"{args.repeats} repeat(s); {m['date']}; {m['cores']} cores; python "
                 f"{m['python']}; torch {m['torch']}; 1-minute load average during the runs "
                 f"{_bench.spread(loads, '{:.2f}')}.")
    return "\n".join(lines)


#: The studies of ``study_text``.
STUDIES = ("default", "48x30")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """How many runs of which studies, and their limits (this script's and ``in_turn.py``'s)."""
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    p.add_argument("--quick", action="store_true", help="tiny studies: checks the script runs")
    p.add_argument("--timeout", type=float, default=900.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    args = p.parse_args(argv)
    run_once("default", quick=True, timeout=args.timeout)  # warm-up: page cache, blank tables
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.studies}
    loads = []
    for _ in range(args.repeats):  # the studies take turns, each followed by its bare loop
        for name in args.studies:
            run = run_once(name, quick=args.quick, timeout=args.timeout)
            loads.append(os.getloadavg()[0])
            run["bare"] = bare_times(run["trials_run"])
            runs[name].append(run)
            print(f"{name}: {run['total']:.1f} s, bare {sum(run['bare'].values()):.1f} s",
                  flush=True)
    summaries = [summarize(name, runs[name], _bench.cores()) for name in args.studies]
    raw = {"machine": _bench.machine(),
           "studies": {s["study"]: {"runs": runs[s["study"]], "summary": s} for s in summaries}}
    markdown = render(summaries, args, loads)
    if not args.quick:
        _bench.write_results(STEM, markdown, raw)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
