"""Everything that imports Ray: the cluster and its warm workers, one round on Ray Tune, and the
callback that hands trial events to a sink it is given. Ray's private API is touched only in
``_ray_private``."""

from hpo._lazy import lazy_exports

__all__ = ["StudyCallback", "TrialEvents", "await_warm_workers", "pack_size",
           "prestart_warm_workers", "run_round", "start_ray"]

__getattr__ = lazy_exports(__name__, {
    "StudyCallback": "hpo.execution.callback",
    "TrialEvents": "hpo.execution.callback",
    "await_warm_workers": "hpo.execution.cluster",
    "prestart_warm_workers": "hpo.execution.cluster",
    "start_ray": "hpo.execution.cluster",
    "pack_size": "hpo.execution.round",
    "run_round": "hpo.execution.round",
})
