"""hpo: coarse-to-fine hyperparameter search for PyTorch on Ray Tune, Optuna and MLflow.

Importing ``hpo`` is cheap: the study-file API is loaded on first use. The layers, bottom up:
``models`` (the factory), ``hpo.trial`` (the trial contract), ``hpo.data``, ``hpo.search``,
``hpo.config`` (the study file), ``hpo.sanity``, ``hpo.execution`` (Ray), ``hpo.tracking``
(MLflow and the journal), ``hpo.report``, and ``hpo.study``, which wires them together.
"""

from __future__ import annotations

from hpo._lazy import lazy_exports
from hpo.errors import DataError, HpoError, InputError, RunError, SpecError

__all__ = ["DataError", "HpoError", "InputError", "RunError", "Spec", "SpecError", "load_spec",
           "parse_spec"]
__version__ = "0.1.0"

__getattr__ = lazy_exports(__name__, {name: "hpo.config" for name in
                                      ("Spec", "load_spec", "parse_spec")})
