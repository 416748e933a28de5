"""The Python API: ``hpo.search(...)`` and ``hpo.train(...)``, what the command line calls.

A study is a path to a study file, the dict such a file holds, or an ``hpo.Spec``; keyword
arguments override the run (``seed``, ``quiet``, ``address``, ...). Input errors raise
``hpo.InputError`` subclasses (the command line's exit code 2), run-time failures
``hpo.RunError``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpo.config.spec import Spec, load_spec, parse_spec
from hpo.errors import Problem, SpecError

__all__ = ["as_spec", "search", "train"]

StudyLike = str | os.PathLike[str] | Mapping[str, Any] | Spec


def as_spec(study: StudyLike, *, seed: int | None = None) -> Spec:
    """``study`` validated (every problem at once), with ``seed`` if given."""
    if isinstance(study, Spec):
        spec = study
    elif isinstance(study, Mapping):
        spec = parse_spec(dict(study), default_name="study")
    else:
        spec = load_spec(study)
    if seed is None:
        return spec
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError([Problem("seed", "must be a whole number >= 0", seed,
                                 "a whole number >= 0")], spec.source)
    return dataclasses.replace(spec, seed=seed)


def search(study: StudyLike, *, seed: int | None = None, address: str | None = None,
           tracking_uri: str | None = None, quiet: bool = False, force: bool = False,
           resume: bool = False, study_root: str | Path = "hpo_runs") -> Any:
    """Run a whole study (``hpo search``); returns its ``StudyResult``: ``best_config``,
    ``best_metric``, ``trials`` (best first), ``run_id`` (the study's MLflow run), ``folder``.
    It prints the final report; ``quiet`` leaves out the checks, progress and round tables."""
    from hpo.execution.cluster import start_ray_soon

    spec = as_spec(study, seed=seed)
    ray_start = start_ray_soon(address, spec)  # Ray starts while torch and the data load
    try:
        from hpo.study.run import run_study
    except BaseException:
        if ray_start is not None:
            ray_start.close()
        raise
    return run_study(spec, address=address, tracking_uri=tracking_uri, quiet=quiet,
                     force=force, resume=resume, study_root=study_root, ray_start=ray_start)


def train(study: StudyLike, *, seed: int | None = None, tracking_uri: str | None = None,
          quiet: bool = False) -> Any:
    """Train one fixed configuration (``hpo train``, e.g. a search's best.yaml) and log it as
    one MLflow run; returns the trial's outcome (its per-epoch history and status)."""
    from hpo.study.single import train_fixed

    return train_fixed(as_spec(study, seed=seed), tracking_uri=tracking_uri, quiet=quiet)
