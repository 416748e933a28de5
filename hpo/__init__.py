"""hpo: coarse-to-fine hyperparameter search for PyTorch on Ray Tune, Optuna and MLflow."""

from hpo.errors import DataError, HpoError, InputError, RunError, SpecError
from hpo.spec import Spec, load_spec, parse_spec

__all__ = ["DataError", "HpoError", "InputError", "RunError", "Spec", "SpecError", "load_spec",
           "parse_spec"]
__version__ = "0.1.0"
