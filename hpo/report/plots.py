"""Matplotlib figures (headless Agg): round ranges, learning curves, activations, Optuna's plots."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hpo.space.bridge import choice_key  # noqa: E402
from hpo.space.distributions import Categorical, Distribution, Float, Int, Numeric  # noqa: E402
from hpo.trial.direction import Direction  # noqa: E402

__all__ = ["activation_histograms", "learning_curves", "optuna_figures", "optuna_trials",
           "round_figure"]


def round_figure(round_index: int, metric: str, mode: str, ranges: Mapping[str, Distribution],
                 next_ranges: Mapping[str, Distribution] | None, records: Sequence[Any]):
    """The metric against each numeric parameter: the round's range shaded grey, the next
    round's range outlined in colour: the picture of a range walking toward the optimum."""
    numeric = [n for n, d in ranges.items() if isinstance(d, Numeric)]
    if not numeric:
        return None
    fig, axes = plt.subplots(1, len(numeric), figsize=(4.2 * len(numeric), 3.4), squeeze=False)
    for ax, name in zip(axes[0], numeric):
        dist = ranges[name]
        points = [(r.sampled[name], r.metric(metric)) for r in records
                  if name in r.sampled and r.metric(metric) is not None]
        failed = [r.sampled[name] for r in records if name in r.sampled and r.metric(metric) is None]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, s=18, color="tab:blue", label="trials", zorder=3)
            best = Direction.of(mode).best(points, key=lambda p: p[1])
            ax.scatter([best[0]], [best[1]], s=60, marker="*", color="tab:red", zorder=4,
                       label="best")
        for x in failed:
            ax.axvline(x, color="tab:red", alpha=0.3, lw=1)
        ax.axvspan(dist.low, dist.high, color="0.85", zorder=0, label=f"round {round_index}")
        if next_ranges and name in next_ranges:
            nxt = next_ranges[name]
            ax.axvspan(nxt.low, nxt.high, fill=False, edgecolor="tab:green", lw=2, hatch="//",
                       zorder=1, label=f"round {round_index + 1}")
        if dist.log:
            ax.set_xscale("log")
        ax.set_xlabel(name + (" (log)" if dist.log else ""))
        ax.set_ylabel(metric)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"round {round_index}: {metric} by parameter")
    fig.tight_layout()
    return fig


def learning_curves(records: Sequence[Any], top: int = 5, *, metric: str = "val_accuracy"):
    """``metric`` per epoch of the top trials (solid), and its ``train_`` twin where the trials
    report one (dashed); for accuracy, train and val accuracy."""
    twin = "train_" + metric[len("val_"):] if metric.startswith("val_") else None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, r in enumerate(records[:top]):
        epochs = list(range(1, len(r.history) + 1))
        color = f"C{i}"
        ax.plot(epochs, [h.get(metric, math.nan) for h in r.history], color=color,
                label=f"trial {r.name} val")
        if twin is not None:
            ax.plot(epochs, [h.get(twin, math.nan) for h in r.history], color=color,
                    ls="--", alpha=0.7)
    name = metric.removeprefix("val_")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{name} (dashed: train)" if twin else metric)
    ax.set_title("learning curves of the top trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def activation_histograms(stats: Mapping[str, Mapping[str, Any]], title: str):
    """The notes' picture: one histogram of activations per hidden layer, with mean and std."""
    layers = list(stats)
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        s = stats[layer]
        ax.hist(s["values"].numpy(), bins=50, color="tab:blue")
        ax.set_title(f"{layer}\nmean {s['mean']:.2f} std {s['std']:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def optuna_trials(records: Sequence[Any], metric: str) -> list[Any]:
    """The trials Optuna's plots show (those with ``metric`` and searched values), or none
    when there are too few to plot."""
    done = [r for r in records if r.metric(metric) is not None and r.sampled]
    return done if len(done) >= 3 else []


def optuna_figures(records: Sequence[Any], ranges_by_round: Sequence[Mapping[str, Distribution]],
                   metric: str, mode: str) -> dict[str, Any]:
    """Optuna's parallel-coordinate and parameter-importance plots over every finished trial."""
    done = optuna_trials(records, metric)
    if not done:
        return {}
    import optuna
    from optuna.visualization import matplotlib as ovm

    from hpo.space.bridge import optuna_space

    spans = _union(ranges_by_round, done)
    dists = optuna_space(spans)
    study = optuna.create_study(direction=Direction.of(mode).optuna)
    for r in done:
        params = {k: (v if not isinstance(v, tuple) else choice_key(v)) for k, v in
                  r.sampled.items() if k in dists}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=r.metric(metric)))
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figures["parallel_coordinate.png"] = ovm.plot_parallel_coordinate(study).figure
        if len(dists) >= 2:
            try:
                figures["param_importances.png"] = ovm.plot_param_importances(study).figure
            except (RuntimeError, ValueError):  # e.g. every trial scored the same
                pass
    for fig in figures.values():
        fig.set_size_inches(8, 4.5)
        fig.tight_layout()
    return figures


def _union(ranges_by_round: Sequence[Mapping[str, Distribution]],
           records: Sequence[Any]) -> dict[str, Distribution]:
    """One distribution per parameter spanning every round's range and every sampled value."""
    out: dict[str, Distribution] = {}
    for name, first in ranges_by_round[0].items():
        dists = [r[name] for r in ranges_by_round if name in r]
        values = [rec.sampled[name] for rec in records if name in rec.sampled]
        if isinstance(first, Categorical):
            choices: list[Any] = []
            for d in dists:
                choices += [c for c in d.choices if c not in choices]
            out[name] = Categorical(tuple(choices))
        else:
            low = min([d.low for d in dists] + values)
            high = max([d.high for d in dists] + values)
            out[name] = (Int if isinstance(first, Int) else Float)(low=low, high=high,
                                                                  log=first.log)
    return out


def close(fig: Any) -> None:
    plt.close(fig)
