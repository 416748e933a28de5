"""A trial actor that is starting is not stopped for a finished trial's actor.

Tune keeps a finished trial's actor for reuse and gives it to the first pending trial, stopping
that trial's own actor even while it starts. With trials shorter than an actor's start, every
new actor is stopped as it starts and one actor runs the whole round. In a round hpo runs
(``_tune_for_short_trials``), the starting actor keeps its trial and the kept one takes the next.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpo.execution.round import _tune_for_short_trials
from tests.fixtures.local_ray import local_ray

#: How long each actor after the first takes to start: far longer than a trial.
SLOW_START_S = 3.0
TRIALS = 6


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    with local_ray(__name__):
        yield


def _trainable_class():
    from ray import tune

    class SlowToStart(tune.Trainable):
        """The first actor starts at once, every later one takes SLOW_START_S; each actor
        leaves a file named by its pid in the ``starts`` folder as it begins to start."""

        def setup(self, config):
            starts = Path(config["starts"])
            (starts / str(os.getpid())).touch()
            try:
                (starts / "first").touch(exist_ok=False)
            except FileExistsError:
                time.sleep(SLOW_START_S)

        def step(self):
            time.sleep(0.05)
            return {"pid": os.getpid(), "done": True}

        def reset_config(self, new_config):
            return True

        def save_checkpoint(self, checkpoint_dir):  # Tune saves each trial as it ends
            return None

        def load_checkpoint(self, checkpoint):
            pass

    return SlowToStart


def run(starts: Path, storage: Path, *, as_hpo: bool) -> tuple[set[int], list[int]]:
    """Trial pids and actors started for TRIALS short trials on 2 CPUs, 2 at a time."""
    from ray import tune

    pids: list[int] = []

    class Pids(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            pids.append(result["pid"])

    starts.mkdir()
    tuner = tune.Tuner(
        tune.with_resources(_trainable_class(), {"cpu": 1}),
        param_space={"starts": str(starts), "i": tune.grid_search(list(range(TRIALS)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), name=starts.name, verbose=0,
                                  callbacks=[Pids()]),
    )
    if as_hpo:
        with _tune_for_short_trials():
            tuner.fit()
    else:
        tuner.fit()
    started = [int(p.name) for p in starts.iterdir() if p.name != "first"]
    return set(pids), started


@pytest.mark.usefixtures("ray_session")
def test_a_starting_actor_keeps_its_trial(tmp_path):
    pids, started = run(tmp_path / "hpo", tmp_path / "tune", as_hpo=True)
    assert len(pids) == 2, f"the round's trials ran in {len(pids)} actor(s)"
    assert len(started) == 2, f"{len(started)} actors started for 2 slots"


@pytest.mark.usefixtures("ray_session")
def test_tune_alone_stops_the_starting_actor(tmp_path):
    """Why the above is needed, in this Ray: Tune's own way stops each starting actor. When
    this fails, Tune no longer does, and ``_ray_private.keep_starting_actors`` can go."""
    pids, _ = run(tmp_path / "plain", tmp_path / "tune", as_hpo=False)
    assert len(pids) == 1, f"Tune alone ran the trials in {len(pids)} actors"
