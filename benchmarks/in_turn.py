"""A change's effect on the whole command: ``hpo search`` from two commits, taken in turn.

    python benchmarks/in_turn.py BASELINE [--repeats N] [--studies default 48x30] [--quick]

The machine's pace drifts by a quarter from hour to hour, so two runs of ``time_to_result.py``
an hour apart cannot tell a few seconds' change. This script checks ``BASELINE`` (any git
revision) out into a temporary worktree and runs ``hpo search STUDY --quiet`` from it and from
this checkout alternately (which goes first swaps each repeat), each a new process, folder and
sqlite store as in ``time_to_result.py``, and reports each one's whole command, start to exit.
Both use this checkout's virtual environment; the baseline's code comes first on the path
(``PYTHONPATH``), in the driver and in Ray's workers alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _bench  # noqa: E402
from time_to_result import add_run_arguments, search  # noqa: E402

STEM = "in_turn"


def whole_command(tree: Path, study: str, *, quick: bool, timeout: float) -> float:
    """Seconds of one ``hpo search --quiet`` of ``study`` with the code of ``tree``."""
    with tempfile.TemporaryDirectory(prefix="hpo-in-turn-") as tmp:
        start, end = search(Path(tmp), study, quick=quick, timeout=timeout, code=tree)
    return end - start


def render(args: argparse.Namespace, commits: dict[str, str],
           times: dict[str, dict[str, list[float]]], loads: list[float]) -> str:
    rows = []
    for study in args.studies:
        before, after = times[study]["baseline"], times[study]["this"]
        rows.append([study, _bench.spread(before, "{:.1f}"), _bench.spread(after, "{:.1f}"),
                     _bench.spread([a - b for a, b in zip(after, before)], "{:+.1f}")])
    return "\n".join([
        "# The whole `hpo search` command, two commits in turn", "",
        f"Seconds, median (min–max) over {args.repeats} repeats; *baseline* is "
        f"`{commits['baseline']}`, *this* `{commits['this']}`; *this − baseline* pairs each "
        f"repeat's two runs. Command: `{_bench.command_line(None)}`.", "",
        _bench.markdown_table(["study", "baseline", "this", "this − baseline"], rows), "",
        f"{_bench.machine()['date']}; {_bench.cores()} cores; 1-minute load average during the "
        f"runs {_bench.spread(loads, '{:.2f}')}."])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("baseline", help="the git revision to compare this checkout with")
    add_run_arguments(p)
    args = p.parse_args(argv)
    repo = HERE.parent

    def rev(r: str) -> str:
        return subprocess.run(["git", "rev-parse", "--short", r], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()

    commits = {"baseline": rev(args.baseline), "this": rev("HEAD")}
    with tempfile.TemporaryDirectory(prefix="hpo-baseline-") as tmp:
        baseline = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(baseline),
                        args.baseline], cwd=repo, check=True)
        try:
            trees = {"baseline": baseline, "this": repo}
            times: dict[str, dict[str, list[float]]] = {
                s: {k: [] for k in trees} for s in args.studies}
            loads = []
            whole_command(repo, "default", quick=True, timeout=args.timeout)  # warm-up
            for i in range(args.repeats):
                for study in args.studies:
                    for name in (("baseline", "this") if i % 2 == 0 else ("this", "baseline")):
                        took = whole_command(trees[name], study, quick=args.quick,
                                             timeout=args.timeout)
                        times[study][name].append(took)
                        loads.append(os.getloadavg()[0])
                        print(f"{study} {name}: {took:.1f} s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=repo)
    markdown = render(args, commits, times, loads)
    print(markdown)
    _bench.write_results(STEM, markdown, {"machine": _bench.machine(), "commits": commits,
                                          "seconds": times, "loads": loads,
                                          "quick": args.quick})
    return 0


if __name__ == "__main__":
    sys.exit(main())
