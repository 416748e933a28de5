"""Same seed, same sampled configurations: the real OptunaSearch with our seeded samplers."""

from __future__ import annotations

import math

import pytest
from ray.tune.search.optuna import OptunaSearch

from hpo.space.distributions import Categorical, Float, Int
from hpo.space.bridge import decode, make_sampler, optuna_space, round_seed

RANGES = {
    "lr": Float(1e-5, 1.0, log=True),
    "dropout": Float(0.0, 0.5),
    "batch_size": Int(16, 256, log=True),
    "activation": Categorical(("relu", "tanh", "elu")),
    "hidden": Categorical(((64,), (128, 64))),
}


def sample(kind: str, seed: int, n: int = 12) -> list[dict]:
    searcher = OptunaSearch(space=optuna_space(RANGES), metric="val_accuracy", mode="max",
                            sampler=make_sampler(kind, seed, n))
    configs = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        configs.append(decode(RANGES, config))
        # a result per trial, so that TPE leaves its start-up phase
        searcher.on_trial_complete(f"t{i}", {"val_accuracy": (i * 37 % 11) / 11.0})
    return configs


@pytest.mark.parametrize("kind", ["random", "qmc", "tpe"])
def test_same_seed_same_configurations(kind):
    first, second = sample(kind, round_seed(0, 1)), sample(kind, round_seed(0, 1))
    assert first == second
    assert sample(kind, round_seed(1, 1)) != first


@pytest.mark.parametrize("kind", ["random", "qmc", "tpe"])
def test_samples_stay_in_their_ranges_and_decode(kind):
    for config in sample(kind, 7):
        for name, dist in RANGES.items():
            assert dist.contains(config[name]), (name, config[name])
        assert isinstance(config["hidden"], tuple)


def test_log_ranges_are_sampled_in_log_space():
    configs = sample("random", 3, n=200)
    decades = [math.floor(math.log10(c["lr"])) for c in configs]
    # uniform in log10 over [-5, 0): each of the five decades gets about 40 of 200 samples
    counts = [decades.count(d) for d in range(-5, 0)]
    assert min(counts) >= 20, counts


def test_rounds_get_different_seeds():
    assert round_seed(0, 1) != round_seed(0, 2)
    assert round_seed(0, 2) == round_seed(0, 2)
