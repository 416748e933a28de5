"""Babysitting: the lecture's five sanity checks, run on the middle of the space before round 1.

``run_sanity_checks`` runs the five in order; each is also a function of its own
(``check_initial_loss``, ``check_regularization``, ``check_overfit_tiny``,
``check_lr_extremes``, ``check_learns``) on a ``CheckSetup``. Torch loads on first use.
"""

from hpo._lazy import lazy_exports

__all__ = ["CheckResult", "CheckSetup", "check_initial_loss", "check_learns", "check_lr_extremes",
           "check_overfit_tiny", "check_regularization", "middle_config", "run_sanity_checks"]

__getattr__ = lazy_exports(__name__, {name: "hpo.sanity.checks" for name in __all__})
