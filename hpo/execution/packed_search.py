"""A Ray Tune searcher whose trials each carry a pack of Optuna configurations.

Optuna asks for the pack's first member over the whole space; the other members are asked with
every structural parameter pinned to the first member's value, so only the per-member ones
(``hpo.trial.pack.PER_MEMBER``) vary. Each member is its own Optuna trial and is told its own
result, so the sampler learns from members exactly as from unpacked trials.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import optuna
from ray.tune.search import Searcher

from hpo.trial.direction import Direction
from hpo.trial.pack import PER_MEMBER

__all__ = ["PACK_KEY", "PackedOptunaSearch", "member_key"]

#: The config key under which a Ray trial carries its members' sampled values.
PACK_KEY = "__pack__"


def member_key(i: int, metric: str) -> str:
    """Where member i's metric sits in a packed trial's flat result."""
    return f"m{i}/{metric}"


class PackedOptunaSearch(Searcher):
    def __init__(self, *, space: Mapping[str, Any], metric: str, mode: str,
                 sampler: optuna.samplers.BaseSampler, pack: int, total: int) -> None:
        super().__init__(metric=metric, mode=mode)
        self._space = dict(space)  # name -> Optuna distribution
        self._pack, self._remaining = pack, total
        self._study = optuna.create_study(
            sampler=sampler, direction=Direction.of(mode).optuna)
        self._live: dict[str, list[optuna.trial.Trial]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._remaining <= 0:
            return Searcher.FINISHED
        size = min(self._pack, self._remaining)
        self._remaining -= size
        first = self._study.ask(self._space)
        shared = {n: v for n, v in first.params.items() if n not in PER_MEMBER}
        members = [first]
        for _ in range(size - 1):
            # Optuna's way to fix some parameters of the next trial and sample the rest
            self._study.enqueue_trial(shared, skip_if_exists=False)
            members.append(self._study.ask(self._space))
        self._live[trial_id] = members
        return {PACK_KEY: [dict(t.params) for t in members]}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        for i, trial in enumerate(self._live.pop(trial_id, [])):
            value = None if error or result is None else result.get(
                member_key(i, self.metric))
            if value is None:
                self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self._study.tell(trial, float(value))

    def add_evaluated_point(self, parameters: dict, value: float | None, error: bool = False,
                            **_: Any) -> None:
        """A member that finished before an interruption: the sampler learns from it."""
        state = optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.COMPLETE
        self._study.add_trial(optuna.trial.create_trial(
            params=dict(parameters), distributions=self._space, state=state,
            value=None if error else value))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))

