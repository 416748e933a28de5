"""Warm trial workers: a Ray that hpo starts brings up one worker process per CPU that has
imported torch and hpo's trainer before the first round (and, when a round ends, the next
round's), and each round's trials run in them, on every CPU, even when each trial is much
shorter than starting a worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpo.execution.round import _tune_for_short_trials

# Two rounds of short trials in a Ray this script starts, as `hpo search` runs them. Prints,
# as JSON, per round: the seconds await_warm_workers waited; per trial its worker's pid; per
# pid when the process started relative to the round; and the pids that had imported
# hpo.execution._warm_worker.
ROUND = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path

    import ray
    import psutil  # Ray's own copy (ray/thirdparty_files), on the path once ray is imported
    from ray import tune
    from ray.experimental import internal_kv

    from ray.tune import registry
    from ray.util import placement_group_table

    from hpo.execution._warm_worker import NAMESPACE, PREFIX
    from hpo.data.dataset import load_dataset
    from hpo.config.spec import parse_spec
    from hpo.execution.cluster import await_warm_workers, prestart_warm_workers, start_ray
    from hpo.execution.round import run_round

    class Pids(tune.Callback):
        def __init__(self):
            self.by_trial = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.by_trial[trial.trial_id] = result["pid"]

    spec = parse_spec({
        "name": "warm", "seed": 0, "data": {"source": "digits"},
        "model": {"arch": "mlp", "hidden": [16], "activation": "relu"},
        "train": {"epochs": 1, "batch_size": 256, "lr": {"loguniform": [0.001, 0.1]}},
        "search": {"rounds": 2, "trials_per_round": 16, "sampler": "random",
                   "resources_per_trial": {"cpu": 1, "gpu": 0}},
        "sanity": {"enabled": False},
    })
    lookups = []  # Tune's reads of a trainable from Ray's key-value store
    read = registry._internal_kv_get
    def counted(key, *args, **kwargs):
        lookups.extend([key] if registry.TRAINABLE_CLASS.encode() in key else [])
        return read(key, *args, **kwargs)
    registry._internal_kv_get = counted

    start_ray(None)
    data_ref = ray.put(load_dataset(spec.data, seed=0))
    rounds = []
    for k in (1, 2):
        waited = await_warm_workers(spec)
        pids, start, read_before = Pids(), time.time(), len(lookups)
        groups = placement_group_table()
        run_round(spec, spec.distributions(), round_index=k, num_trials=16, data_ref=data_ref,
                  storage=Path(sys.argv[1]), callbacks=[pids])
        started = {pid: psutil.Process(pid).create_time() - start
                   for pid in set(pids.by_trial.values()) if psutil.pid_exists(pid)}
        prestarted = prestart_warm_workers(spec) if k == 1 else None
        rounds.append({"waited": waited, "trial_pids": list(pids.by_trial.values()),
                       "started": started, "prestarted": prestarted,
                       "placement_groups": len(set(placement_group_table()) - set(groups)),
                       "lookups": len(lookups) - read_before})
    warm = [int(k.decode().removeprefix(PREFIX))
            for k in internal_kv._internal_kv_list(PREFIX, namespace=NAMESPACE)]
    print(json.dumps({"rounds": rounds, "warm": warm, "cpus": ray.cluster_resources()["CPU"]}))
""")


@pytest.mark.slow
def test_every_round_runs_in_warm_workers_on_every_cpu(tmp_path: Path):
    script = tmp_path / "rounds.py"
    script.write_text(ROUND)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "ray")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = out["rounds"]
    assert first["prestarted"] is True  # Ray's raylet took the request for round 2's workers
    for r in (first, second):
        pids = r["trial_pids"]
        assert len(pids) == 16  # every trial reported
        # Every CPU ran trials: Tune did not hand them all to the first actor that was free.
        assert len(set(pids)) == int(out["cpus"]) == 2
        # Each worker was there before its round began and had imported hpo's trainer (its
        # last preloaded module says so): no trial waited for a process or torch's import.
        assert all(float(t) < 0 for t in r["started"].values()), out
        assert set(pids) <= set(out["warm"])
        assert r["waited"] < 60  # they were ready well before the wait gives up
        # A trial that ends hands its actor to the next one: Tune asked Ray for one placement
        # group per actor, not one per trial (asked for, then dropped when an actor frees up).
        assert r["placement_groups"] == 2, r
        # Tune read its trainable from Ray's key-value store a few times, not per trial.
        assert r["lookups"] <= 4, r
    # Round 2 ran in new processes: round 1's ended with its actors.
    assert not set(first["trial_pids"]) & set(second["trial_pids"])


def test_tune_settings_are_restored_after_a_round(monkeypatch: pytest.MonkeyPatch):
    from ray.tune import registry
    from ray.tune.execution import class_cache

    def trainable(config):  # Ray is not running here: the registry keeps it in-process
        return config

    def other(config):
        return None

    before = dict(class_cache.DEFAULT_ENV_VARS)
    store = registry._global_registry
    store.register(registry.TRAINABLE_CLASS, "hpo-test-trainable", trainable)
    # Each lookup unpickles anew: two lookups are two objects.
    assert store.get(registry.TRAINABLE_CLASS, "hpo-test-trainable") is not store.get(
        registry.TRAINABLE_CLASS, "hpo-test-trainable")
    for name in ("TUNE_GLOBAL_CHECKPOINT_S", "TUNE_MAX_PENDING_TRIALS_PG"):
        monkeypatch.delenv(name, raising=False)
    with _tune_for_short_trials():  # this machine's Ray: the round caps its live trials itself
        assert "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ
    try:
        with _tune_for_short_trials(pending=3):  # a cluster: Tune may ask for 3 actors at once
            assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "3"
            assert "PL_DISABLE_FORK" not in class_cache.DEFAULT_ENV_VARS
            assert float(os.environ["TUNE_GLOBAL_CHECKPOINT_S"]) >= 24 * 3600
            first = store.get(registry.TRAINABLE_CLASS, "hpo-test-trainable")
            assert store.get(registry.TRAINABLE_CLASS, "hpo-test-trainable") is first
            assert first({"a": 1}) == {"a": 1}
        assert class_cache.DEFAULT_ENV_VARS == before
        assert "TUNE_GLOBAL_CHECKPOINT_S" not in os.environ
        assert "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ
        # After the round the registry reads Ray's store again.
        store.register(registry.TRAINABLE_CLASS, "hpo-test-trainable", other)
        assert store.get(registry.TRAINABLE_CLASS, "hpo-test-trainable")({"a": 1}) is None
    finally:
        store.unregister(registry.TRAINABLE_CLASS, "hpo-test-trainable")
    # Values the user set are theirs to keep.
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "30")
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "7")
    with _tune_for_short_trials(pending=3):
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"
        assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "7"
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"
    assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "7"


def test_only_a_users_own_loop_has_its_workers_import_torch_compile():
    """hpo's optimizers step without ``torch._dynamo``; a user's loop most likely steps
    torch.optim's, which imports it at the first step, so its warm workers import it first.
    The module that says a worker is ready stays the last one imported."""
    from hpo.config.spec import load_spec
    from hpo.execution._ray_private import SYSTEM_CONFIG_KEYS
    from hpo.execution.cluster import _warm_workers

    root = Path(__file__).resolve().parents[2] / "search_spaces"
    own_loop = load_spec(root / "own_loop" / "friedman.yaml")
    ours = load_spec(root / "digits_mlp.yaml")
    preload = {name: _warm_workers(spec)[SYSTEM_CONFIG_KEYS[0]]
               for name, spec in (("own loop", own_loop), ("ours", ours))}
    assert own_loop.trainable is not None and ours.trainable is None
    assert "torch._dynamo" in preload["own loop"] and "torch._dynamo" not in preload["ours"]
    assert {p[-1] for p in preload.values()} == {"hpo.execution._warm_worker"}
    assert set(preload["own loop"]) - set(preload["ours"]) == {"torch._dynamo"}
