"""Trials per second of the digits MLP, one model at a time vs packed into vectorized models.

    python benchmarks/packing.py [--device cpu] [--trials 64] [--epochs 10] [--packs 1 8 64]
    python benchmarks/packing.py --device cuda --trials 4096 --unpacked-trials 32 \\
        --packs 1 8 64 256 1024 4096 --packs-per-row 4

Every configuration is trained to completion (the same lr/weight-decay draws, in the same order,
for every row: a row of T trials trains the first T); "unpacked" is hpo's own trial loop
(hpo.trial.train.train_trial), one configuration after another; "pack N" is hpo.trial.pack.train_pack
over groups of N. One torch thread, in-process, on ``--device``: this measures the arithmetic and
Python overhead of training, not Ray's scheduling. Rows may train different numbers of trials
(``--unpacked-trials``, ``--packs-per-row``: a slow runner gets fewer, so each row runs a few
seconds); trials/s makes them comparable. On CUDA the clock is read after
``torch.cuda.synchronize()``, and one small unpacked trial and pack run first, untimed.

Besides the times, the per-member agreement of each packed row with the unpacked runs of the
same configurations on the same device (final metrics), and the number of trials that
diverged (a diverged trial stops early, so it is cheaper). Writes
benchmarks/results/packing_<device>.md and .json (or into ``--out``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402

from hpo.data.dataset import load_dataset  # noqa: E402
from hpo.trial.pack import train_pack  # noqa: E402
from hpo.config.spec import parse_spec  # noqa: E402
from hpo.trial.status import TrialStatus  # noqa: E402
from hpo.trial.train import TrialOutcome, train_trial  # noqa: E402


def configs(n: int, epochs: int) -> list[dict]:
    spec = parse_spec({"model": {"hidden": [64], "activation": "relu", "init": "he"},
                       "train": {"epochs": epochs, "batch_size": 64, "optimizer": "momentum"}})
    rng = np.random.default_rng(0)
    base = spec.resolve({})
    return [{**base, "lr": float(10 ** rng.uniform(-3, -0.5)),
             "weight_decay": float(10 ** rng.uniform(-6, -2))} for _ in range(n)]


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # queued work belongs to the interval it was queued in
    return time.perf_counter()


def run(kind: int | str, members: list[dict], data: Any,
        device: torch.device) -> tuple[float, list[TrialOutcome]]:
    """Seconds to train ``members`` with ``kind`` ("unpacked" or a pack size), and outcomes."""
    start = _clock(device)
    if kind == "unpacked":
        outcomes = [train_trial(m, data, seed=0, device=device) for m in members]
    else:
        outcomes = []
        for i in range(0, len(members), int(kind)):
            outcomes += train_pack(members[i:i + int(kind)], data, seed=0, device=device)
    return _clock(device) - start, outcomes


def row_trials(kind: int | str, args: argparse.Namespace) -> int:
    if kind == "unpacked":
        return args.unpacked_trials or args.trials
    if args.packs_per_row:
        return min(args.trials, int(kind) * args.packs_per_row)
    return args.trials


def agreement(packed: list[TrialOutcome], alone: list[TrialOutcome]) -> dict[str, Any]:
    """How far each member's final metrics are from its unpacked run's (common trials only)."""
    pairs = list(zip(packed, alone))
    both_ok = [(p.last, a.last) for p, a in pairs if p.status is a.status is TrialStatus.OK]

    def rel(key: str) -> float:
        return max((abs(p[key] - a[key]) / max(abs(a[key]), 1e-12) for p, a in both_ok),
                   default=math.nan)

    return {"compared": len(pairs),
            "status_mismatches": sum(p.status != a.status for p, a in pairs),
            "max_abs_val_accuracy": max((abs(p["val_accuracy"] - a["val_accuracy"])
                                         for p, a in both_ok), default=math.nan),
            "max_rel_val_loss": rel("val_loss"), "max_rel_train_loss": rel("train_loss")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--trials", type=int, default=64, help="trials of a packed row")
    parser.add_argument("--unpacked-trials", type=int, default=None,
                        help="trials of the unpacked row (default: --trials)")
    parser.add_argument("--packs-per-row", type=int, default=None,
                        help="a pack row trains at most this many packs (default: no limit)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=_bench.RESULTS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(1)
    data = load_dataset(parse_spec({}).data, seed=0)
    kinds: list[int | str] = ["unpacked", *args.packs]
    members = configs(max(row_trials(k, args) for k in kinds), args.epochs)
    run("unpacked", members[:1], data, device)  # warm-up: CUDA context, kernels, vmap
    run(min(args.packs), members[:min(args.packs)], data, device)
    rows, outcomes = [], {}
    for kind in kinds:
        trials = row_trials(kind, args)
        times = []
        for _ in range(args.repeats):
            seconds, outcomes[kind] = run(kind, members[:trials], data, device)
            times.append(seconds)
        rates = [trials / t for t in times]
        rows.append({"runner": kind if kind == "unpacked" else f"pack {kind}", "trials": trials,
                     "times_s": times, "trials_per_s": rates,
                     "median_trials_per_s": statistics.median(rates),
                     "diverged": sum(o.status is TrialStatus.DIVERGED for o in outcomes[kind])})
        print(f"{rows[-1]['runner']}: {trials} trials, {_bench.spread(times)} s", flush=True)
    base = rows[0]["median_trials_per_s"]
    for row, kind in zip(rows[1:], kinds[1:]):
        row["agreement_with_unpacked"] = agreement(outcomes[kind], outcomes["unpacked"])

    info = _bench.machine()
    where = f"CPU ({info['platform']})"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        where = f"{info['gpu']} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    table = _bench.markdown_table(
        ("runner", "trials", "wall time s", "trials/s", "speed-up vs unpacked", "diverged"),
        [(r["runner"], r["trials"], _bench.spread(r["times_s"]),
          _bench.spread(r["trials_per_s"], "{:.1f}"),
          f"{r['median_trials_per_s'] / base:.2f}x", r["diverged"]) for r in rows])
    checks = [f"{r['runner']}: {a['compared']} members, {a['status_mismatches']} status "
              f"mismatches, max |d val_accuracy| {_bench.num(a['max_abs_val_accuracy'])}, "
              f"max rel d val_loss {_bench.num(a['max_rel_val_loss'], '{:.1e}')}"
              for r in rows[1:] for a in [r["agreement_with_unpacked"]]]
    text = (f"Digits MLP 64-64-10 (momentum SGD, lr log-uniform [1e-3, 0.3], weight decay "
            f"log-uniform [1e-6, 1e-2]), {args.epochs} epochs, batch 64, 1 torch thread, on "
            f"{where}. Each row trains the first *trials* of one list of configurations; "
            f"{args.repeats} repeats, median (min-max); trials/s is per repeat.\n\n"
            f"{table}\n\n"
            f"Packed vs unpacked on the same device, final metrics of the trials both ran:\n\n"
            + "".join(f"- {c}\n" for c in checks)
            + f"\nCommand: `{_bench.command_line(argv)}`\n")
    raw = {"benchmark": "packing", "args": {k: str(v) if isinstance(v, Path) else v
                                            for k, v in vars(args).items()},
           "machine": info, "rows": rows}
    md, js = _bench.write_results(f"packing_{args.device}", text, raw, out_dir=args.out)
    print(text)
    print(f"written: {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
