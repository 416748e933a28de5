"""The Optuna bridge: hpo's distributions as Optuna's, sampled values back, seeded samplers.

Pure: imports Optuna (on use) but neither torch, Ray nor MLflow.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from hpo.errors import InputError
from hpo.space.distributions import Categorical, Distribution, Float, Int

__all__ = ["choice_key", "decode", "encode", "make_sampler", "optuna_space", "round_seed"]


def round_seed(seed: int, round_index: int, attempt: int = 0) -> int:
    """The sampler seed of round k: same study seed, same rounds. A round continued after an
    interruption (``attempt`` > 0) samples the rest of its trials with a seed of its own."""
    entropy = [seed, round_index, attempt] if attempt else [seed, round_index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def choice_key(value: Any) -> str:
    import yaml

    return yaml.safe_dump(list(value) if isinstance(value, tuple) else value,
                          default_flow_style=True).strip()


def optuna_space(ranges: Mapping[str, Distribution]) -> dict[str, Any]:
    """Our distributions as Optuna's; log ranges stay log. Non-scalar choices become strings."""
    import optuna.distributions as od

    out: dict[str, Any] = {}
    for name, dist in ranges.items():
        if isinstance(dist, Int):
            out[name] = od.IntDistribution(int(dist.low), int(dist.high), log=dist.log)
        elif isinstance(dist, Float):
            out[name] = od.FloatDistribution(dist.low, dist.high, log=dist.log)
        elif isinstance(dist, Categorical):
            choices = [c if _is_plain(c) else choice_key(c) for c in dist.choices]
            out[name] = od.CategoricalDistribution(choices)
        else:  # pragma: no cover - the spec admits no other kind
            raise TypeError(f"unsupported distribution {dist!r}")
    return out


def encode(ranges: Mapping[str, Distribution], values: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled values in Optuna's terms (lists as the strings optuna_space uses): decode's
    inverse."""
    return {n: choice_key(values[n]) if isinstance(d, Categorical) and not _is_plain(values[n])
            else values[n] for n, d in ranges.items()}


def decode(ranges: Mapping[str, Distribution], config: Mapping[str, Any]) -> dict[str, Any]:
    """A sampled config back in our terms (string-encoded choices back to lists)."""
    out = {}
    for name, dist in ranges.items():
        value = config[name]
        if isinstance(dist, Categorical) and isinstance(value, str):
            lookup = {choice_key(c): c for c in dist.choices if not _is_plain(c)}
            value = lookup.get(value, value)
        out[name] = value
    return out


def make_sampler(kind: str, seed: int, trials: int):
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                              warn_independent_sampling=False)
    if kind == "tpe":
        # A third of the round (at most 10) is random start-up before TPE models the results.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3)))
    raise InputError(f"search.sampler: unknown sampler {kind!r} (allowed: random | qmc | tpe)")
