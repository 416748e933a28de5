"""A round continued after an interruption samples what the uninterrupted round would have.

The round's searcher is built as ``run_round`` builds it (Ray Tune's OptunaSearch over Optuna's
seeded sampler) and asked as Tune asks it, once straight through and once cut after five
samples and continued the way ``--resume`` continues it (``continuation``'s plan): the journal's
finished trials taught, its cut-short ones run again, the sampler drawn again up to where the
round had it. The e2e tests (test_interrupt_e2e.py) do the same through real signals.
"""

from __future__ import annotations

import pytest

from hpo.config.spec import parse_spec
from hpo.execution.round import _searcher
from hpo.space.bridge import decode, round_seed

TRIALS = 8


def _spec(sampler: str):
    return parse_spec({
        "name": "sampling",
        "seed": 7,
        "model": {"hidden": [8], "activation": {"choice": ["relu", "tanh", "elu"]}},
        "train": {"epochs": 1, "lr": {"loguniform": [1e-4, 1.0]},
                  "weight_decay": {"uniform": [0.0, 0.1]}},
        "search": {"sampler": sampler, "trials_per_round": TRIALS},
    }, source="sampling.yaml", default_name="sampling")


def _searcher_for(spec, **plan):
    searcher, _ = _searcher(spec, spec.distributions(), pack=1, seed=round_seed(spec.seed, 1),
                            round_trials=TRIALS, **plan)
    return searcher


def _key(config: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in config.items()))


def _ask(searcher, n: int, prefix: str, *, finish: set[int] = frozenset()) -> list[dict]:
    """Tune's way: one suggest per new trial; ``finish``: trials told a result on the way."""
    out = []
    for i in range(n):
        out.append(searcher.suggest(f"{prefix}{i}"))
        if i in finish:
            searcher.on_trial_complete(f"{prefix}{i}", {"val_accuracy": 0.1 * i})
    return out


@pytest.mark.parametrize("sampler", ["random", "qmc", "tpe"])
def test_a_continued_round_samples_as_an_uninterrupted_one(sampler):
    spec = _spec(sampler)
    ranges = spec.distributions()
    straight = _ask(_searcher_for(spec, num_trials=TRIALS, done=(), rerun=()), TRIALS, "a",
                    finish={0, 2})
    # Cut after five samples: 1 and 3 finished, 2 and 5 were running, 4 never started (so the
    # journal lacks it).
    first = [decode(ranges, c) for c in straight]
    done = [(first[0], 0.0), (first[2], 0.2)]
    rerun = [first[1], first[4]]
    asked = [True, True, True, False, True]
    resumed = _searcher_for(spec, num_trials=TRIALS - len(done), done=done, rerun=rerun,
                            asked=asked)
    again = [decode(ranges, c) for c in _ask(resumed, TRIALS - len(done), "b")]

    whole = {_key(c) for c in [first[0], first[2], *again]}
    started = {_key(c) for c in (first[0], first[1], first[2], first[4])}
    assert len(whole) == TRIALS
    assert started <= whole  # every sampler: the trials that had started keep their values
    if sampler in ("random", "qmc"):  # independent of results: exactly the same round
        assert whole == {_key(c) for c in first}
