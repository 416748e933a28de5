"""One exception hierarchy. The CLI maps each branch to an exit code.

The model factory's errors (``models.errors``) are the lowest layer's; ``Problem`` and
``UnknownNameError`` are those, and a ``SpecError`` is also a ``models.errors.ConfigError``, so
code that catches the model factory's errors catches a study file's too. The CLI reports every
``ModelError`` as an input error (exit 2).
"""

from __future__ import annotations

from models.errors import ConfigError, ModelError, Problem, UnknownNameError

__all__ = [
    "ConfigError",
    "DataError",
    "HpoError",
    "InputError",
    "ModelError",
    "Problem",
    "RunError",
    "SanityCheckFailed",
    "SpecError",
    "TrackingUnreachable",
    "TrialContractError",
    "UnknownNameError",
    "UserCodeError",
]


class HpoError(Exception):
    """Base of every error hpo raises on purpose."""

    exit_code = 1


class InputError(HpoError):
    """The user's input is wrong (study file, path, option): exit 2, nothing run or logged."""

    exit_code = 2


class SpecError(InputError, ConfigError):
    """Every problem found in a study file, collected in one pass."""


class UserCodeError(SpecError):
    """The user's own code (``model.builder``, ``data.loader``, ``trainable``) cannot be
    imported or called as the study file says, or gave back what hpo cannot use."""


class DataError(InputError):
    """A data file is missing or malformed; the message names the file and the problem."""


class RunError(HpoError):
    """The study failed at run time (exit 1)."""


class TrialContractError(RunError):
    """A trial broke the trial contract (e.g. never reported ``search.metric``): that trial
    fails, the study goes on."""


class TrackingUnreachable(RunError):
    """The MLflow tracking server did not answer before any trial ran."""


class SanityCheckFailed(RunError):
    """A babysitting check failed under ``sanity.strict``."""
