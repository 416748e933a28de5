"""What sharing the cores costs a trial: two bare loops at once against one alone.

    python benchmarks/shared_cores.py [--configs 16] [--repeats 9] [--epochs 30]

A study on this machine runs as many trials at once as it has cores; ``time_to_result.py``
compares each trial with the bare loop (``trial_cost.bare_loop``: plain PyTorch, one thread)
timed alone. This script times the bare loop on ``--configs`` configurations of the default
study's space (``search_spaces/digits_mlp.yaml``, ``--epochs`` epochs, drawn with a fixed seed),
each repeat twice: all of them in one process (*alone*), then the same split over as many
processes at once as this process may use cores (*at once*; each a new process that loads the
data and trains one warm-up configuration first, outside the timing). Per repeat: the median
over configurations of *at once / alone*. Writes benchmarks/results/shared_cores.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import _bench  # noqa: E402

STUDY = HERE.parent / "search_spaces" / "digits_mlp.yaml"


def configurations(count: int, epochs: int) -> list[dict[str, Any]]:
    """``count`` resolved trials of the default study's space, the same on every call."""
    import yaml

    from hpo.config.spec import parse_spec

    spec = parse_spec(yaml.safe_load(STUDY.read_text()))
    rng = random.Random(7)
    out = []
    for _ in range(count):
        sampled = {name: _draw(rng, dist) for name, dist in spec.distributions().items()}
        out.append({**spec.resolve(sampled), "epochs": epochs})
    return out


def _draw(rng: random.Random, dist: Any) -> Any:
    """Uniform over a choice, or over a range's own scale (log10 for a log range)."""
    choices = getattr(dist, "choices", None)
    if choices is not None:
        return rng.choice(list(choices))
    value = dist.from_t(dist.t_low + (dist.t_high - dist.t_low) * rng.random())
    return round(value) if dist.integer else value


def train(indexes: list[int], count: int, epochs: int) -> dict[int, float]:
    """Seconds of the bare loop on each of ``indexes``, after one untimed warm-up."""
    import torch
    import yaml

    from hpo.config.spec import parse_spec
    from hpo.data.dataset import load_dataset
    from trial_cost import bare_loop

    torch.set_num_threads(1)
    spec = parse_spec(yaml.safe_load(STUDY.read_text()))
    data = load_dataset(spec.data, seed=spec.seed)
    configs = configurations(count, epochs)
    bare_loop({**configs[0], "epochs": 1}, data)
    times = {}
    for i in indexes:
        start = time.perf_counter()
        bare_loop(configs[i], data)
        times[i] = time.perf_counter() - start
    return times


def in_processes(groups: list[list[int]], count: int, epochs: int) -> dict[int, float]:
    """``train`` of each group in its own new process, all at once."""
    procs = [subprocess.Popen([sys.executable, __file__, "--child", ",".join(map(str, g)),
                               "--configs", str(count), "--epochs", str(epochs)],
                              stdout=subprocess.PIPE, text=True) for g in groups]
    times: dict[int, float] = {}
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"a child exited {proc.returncode}")
        times.update({int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()})
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=int, default=16)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=_bench.RESULTS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(train([int(i) for i in args.child.split(",")], args.configs,
                               args.epochs)))
        return 0
    info, cores, everything = _bench.machine(), _bench.cores(), list(range(args.configs))
    ratios, alone_s, at_once_s = [], [], []
    for r in range(args.repeats):
        alone = in_processes([everything], args.configs, args.epochs)
        at_once = in_processes([everything[k::cores] for k in range(cores)], args.configs,
                               args.epochs)
        ratios.append(_bench.median([at_once[i] / alone[i] for i in everything]))
        alone_s.append(_bench.median(list(alone.values())))
        at_once_s.append(_bench.median(list(at_once.values())))
        print(f"repeat {r + 1}: at once / alone {ratios[-1]:.3f}", flush=True)
    info["load_avg_at_end"] = list(os.getloadavg())
    table = _bench.markdown_table(
        ("", "median over repeats (min–max)"),
        [("a configuration alone, median seconds", _bench.spread(alone_s, "{:.3f}")),
         (f"{cores} at once, median seconds", _bench.spread(at_once_s, "{:.3f}")),
         ("at once / alone, median over configurations", _bench.spread(ratios, "{:.2f}x"))])
    text = (f"# Two bare loops at once against one alone\n\n{args.configs} configurations of "
            f"`search_spaces/digits_mlp.yaml` at {args.epochs} epochs, the bare loop of "
            f"`trial_cost.py` (one torch thread), {args.repeats} repeats.\n\n{table}\n\n"
            f"Machine: {info['cores']} cores, load average {info['load_avg_at_start']} at the "
            f"start, {info['load_avg_at_end']} at the end. Command: "
            f"`{_bench.command_line(argv)}`\n")
    raw = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": info,
           "ratio": ratios, "alone_s": alone_s, "at_once_s": at_once_s}
    _bench.write_results("shared_cores", text, raw, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
