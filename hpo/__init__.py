"""hpo: coarse-to-fine hyperparameter search for PyTorch on Ray Tune, Optuna and MLflow.

The Python API::

    import hpo
    result = hpo.search("space.yaml", seed=1)   # a path, a dict or an hpo.Spec
    result.best_config, result.best_metric, result.trials, result.run_id, result.folder
    hpo.train("hpo_runs/digits-mlp/best.yaml")

and the trial contract for a loop of your own: ``fit(config, trial: hpo.Trial)`` reporting
``trial.report(epoch=k, **metrics)``; ``fit(config, hpo.Trial.local())`` runs it outside hpo.

Importing ``hpo`` is cheap: everything is loaded on first use. The layers, bottom up:
``models`` (the factory), ``hpo.trial`` (the trial contract), ``hpo.data``, ``hpo.space``,
``hpo.config`` (the study file), ``hpo.sanity``, ``hpo.execution`` (Ray), ``hpo.tracking``
(MLflow and the journal), ``hpo.report``, and ``hpo.study``, which wires them together.
"""

from __future__ import annotations

from hpo._lazy import lazy_exports
from hpo.errors import DataError, HpoError, InputError, RunError, SpecError

__all__ = ["DataError", "HpoError", "InputError", "RunError", "Spec", "SpecError", "Trial",
           "TrialStopped", "load_spec", "parse_spec", "search", "train"]
__version__ = "0.1.0"

__getattr__ = lazy_exports(__name__, {
    "Spec": "hpo.config",
    "load_spec": "hpo.config",
    "parse_spec": "hpo.config",
    "Trial": "hpo.trial.contract",
    "TrialStopped": "hpo.trial.contract",
    "search": "hpo.study.api",
    "train": "hpo.study.api",
})
