"""hpo: coarse-to-fine hyperparameter search for PyTorch on Ray Tune, Optuna and MLflow.

Importing ``hpo`` is cheap: the study-file API is loaded on first use.
"""

from __future__ import annotations

from typing import Any

from hpo.errors import DataError, HpoError, InputError, RunError, SpecError

__all__ = ["DataError", "HpoError", "InputError", "RunError", "Spec", "SpecError", "load_spec",
           "parse_spec"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("Spec", "load_spec", "parse_spec"):
        from hpo.config import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
