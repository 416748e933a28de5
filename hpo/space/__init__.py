"""The search space and how it moves: distributions, coarse-to-fine refinement, the Optuna bridge.

Pure: no torch, Ray or MLflow (Optuna only where samplers are made).
"""

from hpo.space.bridge import decode, encode, make_sampler, optuna_space, round_seed
from hpo.space.refinement import (
    Change,
    FinishedTrial,
    Reason,
    RefineSettings,
    Refinement,
    refine,
    should_stop,
)
from hpo.space.distributions import (
    Categorical,
    Distribution,
    Float,
    Int,
    Numeric,
    parse_distribution,
)

__all__ = ["Categorical", "Change", "Distribution", "FinishedTrial", "Float", "Int", "Numeric",
           "Reason", "RefineSettings", "Refinement", "decode", "encode", "make_sampler",
           "optuna_space", "parse_distribution", "refine", "round_seed", "should_stop"]
