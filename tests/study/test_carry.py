"""A TPE round learns from the earlier rounds' trials before its first sample.

Coarse to fine narrows the ranges between rounds; a model-based sampler that started each round
blind would spend its first samples relearning what the last round showed. The carried trials
are those inside the new ranges (Optuna holds a trial to its search space), with their metric.
"""

from __future__ import annotations

import math

import optuna

from hpo.config.spec import parse_spec
from hpo.execution.round import _searcher
from hpo.space.bridge import decode, round_seed
from hpo.space.distributions import Float
from hpo.study.rounds import carried_trials
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus

TRIALS = 8


def _record(i: int, lr: float, accuracy: float | None,
            status: TrialStatus = TrialStatus.OK) -> TrialRecord:
    history = [] if accuracy is None else [{"epoch": 1, "val_accuracy": accuracy}]
    return TrialRecord(round=1, index=i, trial_id=f"t{i}", params={"lr": lr},
                       sampled={"lr": lr}, status=status, history=history)


def test_only_trials_with_a_metric_inside_the_ranges_are_carried_and_only_to_tpe():
    ranges = {"lr": Float(1e-3, 1e-1, log=True)}
    records = [_record(1, 0.01, 0.9), _record(2, 0.5, 0.3),  # outside the new range
               _record(3, 0.02, None, TrialStatus.FAILED), _record(4, 0.05, 0.7)]
    assert carried_trials(records, ranges, "val_accuracy", sampler="tpe") == [
        ({"lr": 0.01}, 0.9), ({"lr": 0.05}, 0.7)]
    for sampler in ("random", "qmc"):  # no model to teach
        assert carried_trials(records, ranges, "val_accuracy", sampler=sampler) == []


def _spec():
    return parse_spec({
        "name": "carry", "seed": 3,
        "model": {"hidden": [8]},
        "train": {"epochs": 1, "lr": {"loguniform": [1e-4, 1.0]}},
        "search": {"sampler": "tpe", "trials_per_round": TRIALS},
    }, source="carry.yaml", default_name="carry")


def _first_samples(carried) -> list[float]:
    spec = _spec()
    ranges = spec.distributions()
    searcher, _ = _searcher(spec, ranges, pack=1, num_trials=TRIALS, done=(), rerun=(),
                            seed=round_seed(spec.seed, 2), round_trials=TRIALS, carried=carried)
    held = searcher._ot_study.trials  # Ray's OptunaSearch keeps its Optuna study here
    assert [t.state for t in held] == [optuna.trial.TrialState.COMPLETE] * len(carried)
    assert [t.value for t in held] == [value for _, value in carried]
    return [decode(ranges, searcher.suggest(f"t{i}"))["lr"] for i in range(4)]


def test_a_tpe_round_samples_near_what_the_earlier_rounds_found_from_its_first_trial():
    # the earlier rounds: the closer lr is to 0.03, the better
    lrs = [10 ** (-4 + 4 * i / 19) for i in range(20)]
    carried = [({"lr": lr}, 1.0 - abs(math.log10(lr / 0.03)) / 4) for lr in lrs]
    blind, taught = _first_samples([]), _first_samples(carried)

    def distance(samples: list[float]) -> float:
        return sorted(abs(math.log10(lr / 0.03)) for lr in samples)[len(samples) // 2]

    assert distance(taught) < 0.5 < distance(blind), (blind, taught)
