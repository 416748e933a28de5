"""The study file: typed sections, search distributions, and every input error in one pass.

Pure: imports neither torch, Ray, Optuna nor MLflow, so ``hpo validate`` is fast. Each section's
fields carry their rule (what is allowed) in ``metadata`` and the parser walks those fields, so
a default and its rule are written once:

- ``hpo.config.rules``: the rule types (the model factory's, ``models.fields``, and hpo's own).
- ``hpo.config.sections``: the sections; ``model`` and ``train`` are ``models.ModelConfig`` and
  ``hpo.trial.TrainConfig``, ``data`` is ``hpo.data.DataSpec``.
- ``hpo.config._parse``: one section at a time, by its fields' rules.
- here: ``Spec``, ``load_spec`` / ``parse_spec``, and the rules between sections.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpo.config._parse import parse_field, plain_section, searchable_section
from hpo.config.rules import Number, Text
from hpo.config.sections import (
    MODEL_RULES,
    NOT_SEARCHABLE,
    PLAIN_SECTIONS,
    SEARCHABLE,
    SEARCHABLE_SECTIONS,
    SECTION_ORDER,
    TRAIN_RULES,
    DataSpec,
    GapSpec,
    SanitySpec,
    SearchSpec,
    TrackingSpec,
)
from hpo.data.config import FLATTENING, data_problems
from hpo.errors import Problem, SpecError
from hpo.search.refinement import RefineSettings
from hpo.search.space import Categorical, Distribution, Numeric
from hpo.trial.config import TrainConfig
from hpo.trial.metrics import METRICS
from models.validate import relation_problems

__all__ = [
    "DataSpec",
    "GapSpec",
    "METRICS",
    "MODEL_RULES",
    "NOT_SEARCHABLE",
    "SEARCHABLE",
    "SanitySpec",
    "SearchSpec",
    "Spec",
    "TRAIN_RULES",
    "TrackingSpec",
    "TrainConfig",
    "load_spec",
    "parse_spec",
]


@dataclass(frozen=True, kw_only=True)
class Spec:
    """A validated study. ``model`` and ``train`` map field names to values or distributions."""

    name: str
    seed: int
    data: DataSpec
    model: dict[str, Any]
    train: dict[str, Any]
    search: SearchSpec
    gap: GapSpec
    sanity: SanitySpec
    tracking: TrackingSpec
    source: str | None = None

    def distributions(self) -> dict[str, Distribution]:
        """The searched parameters, by field name (names are unique across model and train)."""
        return {
            k: v for k, v in {**self.model, **self.train}.items() if isinstance(v, Distribution)
        }

    def fixed(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in {**self.model, **self.train}.items()
            if not isinstance(v, Distribution)
        }

    def resolve(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        """Every model and train field with a concrete value: fixed ones plus ``sampled``."""
        missing = set(self.distributions()) - set(sampled)
        if missing:
            raise KeyError(f"no sampled value for {sorted(missing)}")
        return {**self.fixed(), **{k: sampled[k] for k in self.distributions()}}

    def with_fixed(self, values: Mapping[str, Any]) -> Spec:
        """This study with every searched field fixed to ``values`` (what best.yaml holds)."""
        resolved = self.resolve(values)
        return dataclasses.replace(
            self,
            model={k: resolved[k] for k in self.model},
            train={k: resolved[k] for k in self.train},
        )

    def natural_limits(self, name: str) -> tuple[float, float]:
        r = SEARCHABLE[name][1]
        return r.limits() if isinstance(r, Number) else (-math.inf, math.inf)

    def hard_bounds(self, name: str) -> tuple[float, float]:
        """``search.bounds`` intersected with the field's natural limits."""
        lo, hi = self.natural_limits(name)
        if name in self.search.bounds:
            b_lo, b_hi = self.search.bounds[name]
            lo, hi = max(lo, b_lo), min(hi, b_hi)
        return lo, hi

    def refine_settings(self) -> RefineSettings:
        """How this study refines its ranges: ``search:``, ``gap:`` and the hard bounds."""
        numeric = [n for n, d in self.distributions().items() if isinstance(d, Numeric)]
        return RefineSettings(
            mode=self.search.resolved_mode,
            top_fraction=self.search.top_fraction,
            edge=self.search.edge,
            widen=self.search.widen,
            bounds={name: self.hard_bounds(name) for name in numeric},
            adapt_regularization=self.gap.adapt_regularization,
        )

    def to_dict(self) -> dict[str, Any]:
        """The resolved study (every default filled in), as YAML-ready plain data."""
        out: dict[str, Any] = {"name": self.name, "seed": self.seed}
        for section in SECTION_ORDER:
            value = getattr(self, section)
            if isinstance(value, dict):
                out[section] = {k: _plain(v) for k, v in value.items()}
            else:
                out[section] = {
                    f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                }
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def _plain(value: Any) -> Any:
    if isinstance(value, Distribution):
        return value.to_yaml()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- parsing


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a study file; raises SpecError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError([Problem("(file)", "no such file", source, has_given=False)], source)
    except OSError as exc:
        raise SpecError([Problem("(file)", f"cannot read: {exc.strerror}", has_given=False)],
                        source)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([Problem(where, f"not valid YAML: {reason}", has_given=False)], source)
    return parse_spec(raw if raw is not None else {}, source=source, default_name=Path(path).stem)


def parse_spec(raw: Any, *, source: str | None = None, default_name: str = "study") -> Spec:
    """Validate a study file's parsed YAML; raises SpecError listing every problem.

    Each section is parsed by its fields' rules; the rules between fields (``_cross_checks``)
    run only on a study whose every field follows its own rule.
    """
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise SpecError(
            [Problem("(top level)", "the study file must be a mapping", type(raw).__name__,
                     "keys: name, seed, " + ", ".join(SECTION_ORDER))],
            source,
        )
    top_allowed = ("name", "seed", *SECTION_ORDER)
    for key in raw:
        if key not in top_allowed:
            problems.append(Problem(str(key), "unknown key", has_given=False,
                                    allowed=", ".join(top_allowed)))

    name = (parse_field(raw, "name", Text(optional=True), default_name, "name", problems)
            or default_name)
    seed = parse_field(raw, "seed", Number(low=0, integer=True), 0, "seed", problems)

    sections: dict[str, Any] = {}
    for section in SECTION_ORDER:
        body = raw.get(section) or {}
        if not isinstance(body, dict):
            problems.append(Problem(section, "must be a mapping", body,
                                    f"keys under {section}: ..."))
            body = {}
        if section in SEARCHABLE_SECTIONS:
            cls = SEARCHABLE_SECTIONS[section]
            sections[section] = searchable_section(body, section, cls, problems)
        else:
            sections[section] = plain_section(body, section, PLAIN_SECTIONS[section], problems)

    spec = None
    if not problems:
        spec = Spec(name=name, seed=seed, source=source, **sections)
        problems += _cross_checks(spec)
    if problems:
        raise SpecError(problems, source)
    assert spec is not None  # no problems: it was built above
    return spec



def _cross_checks(spec: Spec) -> list[Problem]:
    """The rules between fields: within the data section, between data and model, within the
    model section (``models.validate.relation_problems``), and search.bounds against ranges."""
    return (data_problems(spec.data) + _shape_problems(spec)
            + relation_problems(spec.model) + _bounds_problems(spec))


def _shape_problems(spec: Spec) -> list[Problem]:
    """The convnet needs images (C, H, W): csv features and pca/whiten output are flat."""
    problems = []
    d = spec.data
    flattening = [s for s in d.preprocess if s in FLATTENING]
    arch = spec.model["arch"]
    archs = arch.choices if isinstance(arch, Categorical) else (arch,)
    if "convnet" in archs and flattening:
        problems.append(Problem("data.preprocess", f"{flattening[0]} leaves flat features, "
                                "but model.arch convnet needs images (C, H, W)",
                                list(d.preprocess), "zero_center | per_channel_mean | normalize "
                                "for a convnet; pca/whiten with the mlp"))
    if "convnet" in archs and d.source == "csv":
        problems.append(Problem("data.source", "csv features are flat, but model.arch convnet "
                                "needs images (C, H, W)", d.source,
                                "an image source for a convnet; csv with the mlp"))
    return problems


def _bounds_problems(spec: Spec) -> list[Problem]:
    """A searched range must lie within that field's ``search.bounds``."""
    problems = []
    for name, (lo, hi) in spec.search.bounds.items():
        section = SEARCHABLE[name][0]
        value = getattr(spec, section)[name]
        if isinstance(value, Numeric) and (value.low < lo or value.high > hi):
            problems.append(Problem(f"{section}.{name}", f"range lies outside search.bounds.{name}",
                                    value.to_yaml(), f"within [{lo:g}, {hi:g}]"))
    return problems
