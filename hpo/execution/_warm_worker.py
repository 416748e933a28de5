"""The last module a warm Ray worker imports as it starts (``hpo.tune.WARM_WORKERS``).

By then the worker has imported torch and hpo's trainer; it says so in Ray's key-value store,
where ``hpo.tune.await_warm_workers`` counts the workers ready to host a trial.
"""

import os

import ray
from ray.experimental import internal_kv

NAMESPACE, PREFIX = "hpo", "warm-worker:"

if ray._private.worker.global_worker.mode == ray.WORKER_MODE:  # a worker, not a driver
    internal_kv._internal_kv_put(f"{PREFIX}{os.getpid()}", b"ready", namespace=NAMESPACE)
