"""The whole ``hpo search`` command on many short packed trials, beside packed training alone.

    python benchmarks/whole_search.py [--trials 2048 10240] [--repeats 3] [--pack 64]

What a user waits for: ``hpo search study.yaml`` run as a shell runs it (a new process: imports,
Ray's start, the trials, their MLflow runs, the final retrain, report and model, exit), timed
from start to exit. Beside it, in the same repeat, the bare baseline: the very trials the
study ran (its journaled configurations, in order) trained in packs alone, in-process, one
torch thread, no Ray, no MLflow (``scale.packed_alone``). The study is ``scale.py``'s: digits
MLP 64, one epoch a trial, lr and weight decay searched, ``search.pack``, sanity checks off, a
new sqlite store. Median (min–max) over ``--repeats``; writes
benchmarks/results/whole_search.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402 - benchmarks/ and the repository on sys.path first
from scale import packed_alone, study_dict  # noqa: E402

HPO = Path(sys.executable).parent / "hpo"


def one_repeat(trials: int, pack: int) -> dict[str, float]:
    import yaml

    work = Path(tempfile.mkdtemp(prefix="hpo-whole-"))
    study = work / "study.yaml"
    study.write_text(yaml.safe_dump(study_dict(trials=trials, rounds=1, epochs=1, seed=0,
                                               pack=pack)))
    start = time.perf_counter()
    done = subprocess.run([str(HPO), "search", str(study), "--quiet", "--tracking-uri",
                           f"sqlite:///{work / 'mlflow.db'}", "--study-root", str(work / "runs")],
                          cwd=work, capture_output=True, text=True,
                          env={**os.environ,  # a local Ray of its own: no token to share
                               "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")})
    whole = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"hpo search exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return {"whole_s": whole, "alone_s": packed_alone(work, study, pack)["seconds"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--trials", type=int, nargs="+", default=[2048, 10240])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pack", type=int, default=64)
    p.add_argument("--out", type=Path, default=_bench.RESULTS)
    args = p.parse_args(argv)
    info = _bench.machine()
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.trials}
    for r in range(args.repeats):  # the sizes take turns: each sees the machine's moments
        for n in args.trials:
            run = one_repeat(n, args.pack)
            runs[n].append(run)
            print(f"{n} trials, repeat {r + 1}: whole {run['whole_s']:.1f} s, alone "
                  f"{run['alone_s']:.1f} s", flush=True)
    info["load_avg_at_end"] = list(os.getloadavg())
    rows = []
    for n, repeats in runs.items():
        whole = [x["whole_s"] for x in repeats]
        alone = [x["alone_s"] for x in repeats]
        rows.append((n, _bench.spread(whole, "{:.1f}"), _bench.spread(alone, "{:.1f}"),
                     _bench.spread([w - a for w, a in zip(whole, alone)], "{:.1f}"),
                     _bench.spread([w / a for w, a in zip(whole, alone)], "{:.2f}x"),
                     _bench.spread([n / w for w in whole], "{:.0f}")))
    table = _bench.markdown_table(
        ("trials", "whole `hpo search`, s", "packed training alone, s", "whole − alone, s",
         "whole / alone", "trials/s of the whole command"), rows)
    text = (f"# The whole `hpo search` command beside packed training alone\n\n"
            f"One-epoch digits trials in packs of {args.pack}, one round, sanity checks off, a "
            f"new sqlite store; the command as a shell runs it, start to exit. Median (min–max) "
            f"over {args.repeats} repeats.\n\n{table}\n\nMachine: {info['cores']} cores, load "
            f"average {info['load_avg_at_start']} at the start, {info['load_avg_at_end']} at "
            f"the end. Command: `{_bench.command_line(argv)}`\n")
    md, js = _bench.write_results("whole_search", text, {"args": vars(args), "machine": info,
                                                         "runs": runs}, args.out)
    print(text)
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
