"""Babysitting: the lecture's five sanity checks, run on the middle of the space before round 1."""

from hpo._lazy import lazy_exports

__all__ = ["CheckResult", "middle_config", "run_sanity_checks"]

__getattr__ = lazy_exports(__name__, {name: "hpo.sanity.checks" for name in __all__})
