"""The study file: typed sections, their rules, and every input error found in one pass.

Pure: imports neither torch, Ray, Optuna nor MLflow, so ``hpo validate`` is fast.
"""

from hpo.config.spec import (
    DataSpec,
    GapSpec,
    SanitySpec,
    SearchSpec,
    Spec,
    TrackingSpec,
    TrainConfig,
    load_spec,
    parse_spec,
)

__all__ = ["DataSpec", "GapSpec", "SanitySpec", "SearchSpec", "Spec", "TrackingSpec",
           "TrainConfig", "load_spec", "parse_spec"]
