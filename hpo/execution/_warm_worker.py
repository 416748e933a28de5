"""The last module a warm Ray worker imports as it starts (``hpo.execution.round.WARM_WORKERS``).

By then the worker has imported torch and hpo's trainer; it says so in Ray's key-value store,
where ``hpo.execution.round.await_warm_workers`` counts the workers ready to host a trial.
"""

import os

from hpo.execution import _ray_private

NAMESPACE, PREFIX = "hpo", "warm-worker:"

if _ray_private.in_worker_process():  # a worker, not a driver
    _ray_private.kv_put(f"{PREFIX}{os.getpid()}", b"ready", namespace=NAMESPACE)
