"""The study file: typed sections, their rules, and every input error found in one pass.

Pure: imports neither torch, Ray, Optuna nor MLflow, so ``hpo validate`` is fast. The rules
(``rules``) are the model factory's (``models.fields``) plus hpo's own; the sections
(``sections``) are ``models.ModelConfig``, ``hpo.trial.TrainConfig``, ``hpo.data.DataSpec`` and
the search, gap, sanity and tracking sections; ``spec`` reads a study file into a ``Spec``.
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
