"""The study file's sections and the rules of their fields.

Two kinds of section:

- searchable (``model``, ``train``): any field may hold a search distribution instead of a
  value. Their fields are those of ``models.ModelConfig`` and ``hpo.trial.TrainConfig``, each
  declared there with its rule; ``MODEL_RULES``, ``TRAIN_RULES`` and ``SEARCHABLE`` are read
  off those declarations.
- plain (``data``, ``search``, ``gap``, ``sanity``, ``tracking``): fixed values only; each is a
  frozen dataclass whose fields carry their rule. ``DataSpec`` belongs to the data package
  (``hpo.data.config``); the others are declared here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hpo.config.rules import (
    Flag,
    Invalid,
    Number,
    OneOf,
    Pack,
    Resources,
    Rule,
    Text,
    field_rule,
    rule,
    searchable,
)
from hpo.data.config import DataSpec
from hpo.trial.config import TrainConfig
from hpo.trial.direction import Direction
from hpo.trial.metrics import METRICS
from models.config import ModelConfig

__all__ = [
    "DataSpec",
    "GapSpec",
    "MODEL_RULES",
    "NOT_SEARCHABLE",
    "PLAIN_SECTIONS",
    "SEARCHABLE",
    "SEARCHABLE_SECTIONS",
    "SECTION_ORDER",
    "SanitySpec",
    "SearchSpec",
    "TRAIN_RULES",
    "TrackingSpec",
]


# ----------------------------------------------------------------------------- searchable

#: The searchable sections, by name: the dataclass that declares each one's fields.
SEARCHABLE_SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}


def _rules(cls: type) -> dict[str, Rule]:
    return {f.name: field_rule(f) for f in dataclasses.fields(cls)}


#: Rules of the searchable sections, keyed by the config dataclasses' field names.
MODEL_RULES: dict[str, Rule] = _rules(ModelConfig)
TRAIN_RULES: dict[str, Rule] = _rules(TrainConfig)
#: Fields that are never searched (paths, modes of operation): declared ``searchable=False``.
NOT_SEARCHABLE = {
    f.name
    for cls in SEARCHABLE_SECTIONS.values()
    for f in dataclasses.fields(cls)
    if not searchable(f)
}

#: Every searchable field: its section and its rule (names are unique across the sections).
SEARCHABLE: dict[str, tuple[str, Rule]] = {
    **{k: ("model", r) for k, r in MODEL_RULES.items()},
    **{k: ("train", r) for k, r in TRAIN_RULES.items()},
}


# ----------------------------------------------------------------------------- plain


@dataclass(frozen=True)
class MetricName(Rule):
    """A metric's name: hpo's own (``METRICS``) or one a user's trainable reports. Whether an
    unknown name is allowed depends on the study (``hpo.config.spec`` checks it)."""

    allowed: str = " | ".join(METRICS) + " (or a metric your trainable reports)"

    def parse(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.isidentifier():
            raise Invalid("wrong type", self.allowed)
        return value


@dataclass(frozen=True, kw_only=True)
class SearchSpec:
    # what "best" means: one of METRICS, or any metric a trainable of the user's reports
    metric: str = rule(MetricName(), "val_accuracy")
    mode: str | None = rule(OneOf(("max", "min"), optional=True), None)  # default: from metric
    # tpe: the default the LCBench benchmark chose (docs/performance.md); random: the notes' method
    sampler: str = rule(OneOf(("random", "qmc", "tpe")), "tpe")  # grid is not offered
    rounds: int = rule(Number(low=1, integer=True), 4)  # round 1 coarse, later rounds refine
    trials_per_round: int = rule(Number(low=1, integer=True), 18)  # 4 x 18: LCBench's choice
    top_fraction: float = rule(Number(0, 1, low_open=True), 0.25)  # the elite
    edge: float = rule(Number(0, 0.5, high_open=True), 0.1)  # "on the edge" within this fraction
    widen: float = rule(Number(low=1, low_open=True), 10.0)  # log ranges x widen; linear + width
    min_improvement: float = rule(Number(low=0), 0.001)  # early stop below this gain (no widening)
    # hard limits: a numeric model/train field -> [lo, hi] (parsed by hpo.config._parse.bounds)
    bounds: dict[str, tuple[float, float]] = rule(Rule(), factory=dict)
    scheduler: str = rule(OneOf(("fifo", "asha")), "fifo")
    max_concurrent_trials: int | None = rule(Number(low=1, integer=True, optional=True), None)
    resources_per_trial: dict[str, float] = rule(
        Resources(), factory=lambda: {"cpu": 1.0, "gpu": 0.0}
    )
    max_failures: int = rule(Number(low=0, integer=True), 1)  # retries of a trial that raises
    # Members per Ray trial, trained as one vectorized model (mlp without checkpoint; they share
    # every structural choice and differ in lr, weight_decay, momentum, init_std). auto: 8 on
    # CPU, more on a GPU.
    pack: int | str = rule(Pack(), 1)

    @property
    def resolved_mode(self) -> Direction:
        """``mode``, else the metric's own direction (losses and the gap: min). A metric hpo
        does not know needs ``mode`` (the parser says so)."""
        return Direction(self.mode) if self.mode is not None else METRICS[self.metric]


@dataclass(frozen=True, kw_only=True)
class GapSpec:
    threshold: float = rule(Number(0, 1, low_open=True), 0.10)  # train - val accuracy: overfitting
    adapt_regularization: bool = rule(Flag(), True)  # push regularization up when elite overfits


@dataclass(frozen=True, kw_only=True)
class SanitySpec:
    enabled: bool = rule(Flag(), True)  # run the babysitting checks before round 1
    strict: bool = rule(Flag(), True)  # a failed check stops the study (unless --force)


@dataclass(frozen=True, kw_only=True)
class TrackingSpec:
    uri: str | None = rule(Text(), None)  # overrides MLFLOW_TRACKING_URI


#: The plain sections, by name.
PLAIN_SECTIONS: dict[str, type] = {
    "data": DataSpec,
    "search": SearchSpec,
    "gap": GapSpec,
    "sanity": SanitySpec,
    "tracking": TrackingSpec,
}
#: The order of the sections in a resolved study file (``hpo validate``, best.yaml).
SECTION_ORDER = ("data", "model", "train", "search", "gap", "sanity", "tracking")
