"""Trials per second of the digits MLP, one model at a time vs packed into vectorized models.

    python benchmarks/packing.py [--trials 64] [--epochs 10] [--packs 1 8 64] [--repeats 3]

Every configuration is trained to completion (the same lr/weight-decay draws for every pack
size); "unpacked" is hpo's own trial loop (hpo.trainable.train_trial), one configuration after
another; "pack N" is hpo.packing.train_pack over groups of N. One thread, in-process: this
measures the arithmetic and Python overhead of training, not Ray's scheduling. Writes
benchmarks/results/packing_<device>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hpo.data import load_dataset
from hpo.packing import train_pack
from hpo.spec import parse_spec
from hpo.trainable import train_trial

RESULTS = Path(__file__).parent / "results"


def configs(n: int, epochs: int) -> list[dict]:
    spec = parse_spec({"model": {"hidden": [64], "activation": "relu", "init": "he"},
                       "train": {"epochs": epochs, "batch_size": 64, "optimizer": "momentum"}})
    rng = np.random.default_rng(0)
    base = spec.resolve({})
    return [{**base, "lr": float(10 ** rng.uniform(-3, -0.5)),
             "weight_decay": float(10 ** rng.uniform(-6, -2))} for _ in range(n)]


def run(kind: int | str, members: list[dict], data) -> float:
    start = time.perf_counter()
    if kind == "unpacked":
        for m in members:
            train_trial(m, data, seed=0)
    else:
        for i in range(0, len(members), kind):
            train_pack(members[i:i + kind], data, seed=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(parse_spec({}).data, seed=0)
    members = configs(args.trials, args.epochs)
    rows = []
    for kind in ["unpacked", *args.packs]:
        times = [run(kind, members, data) for _ in range(args.repeats)]
        rate = [args.trials / t for t in times]
        rows.append({"runner": kind if kind == "unpacked" else f"pack {kind}",
                     "median_s": statistics.median(times), "min_s": min(times),
                     "max_s": max(times), "trials_per_s": statistics.median(rate)})
    ideal = rows[0]["trials_per_s"]
    lines = [f"Digits MLP 64-64-10, {args.trials} trials x {args.epochs} epochs, batch 64, "
             f"1 thread, CPU ({platform.processor() or platform.machine()}), "
             f"{args.repeats} repeats: median (min-max).", "",
             "| runner | wall time s | trials/s | speed-up vs unpacked |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['runner']} | {r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}) "
                     f"| {r['trials_per_s']:.2f} | {r['trials_per_s'] / ideal:.2f}x |")
    table = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "packing_cpu.md").write_text(table)
    (RESULTS / "packing_cpu.json").write_text(json.dumps(rows, indent=2))
    print(table)


if __name__ == "__main__":
    main()
