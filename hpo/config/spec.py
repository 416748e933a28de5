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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import hpo.usercode as usercode
from hpo.config._parse import (
    builder_section,
    free_section,
    parse_field,
    plain_section,
    searchable_section,
    unknown_key,
)
from hpo.config._yaml import read_yaml
from hpo.config.rules import ListOf, Number, Text
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
from hpo.space.distributions import Categorical, Distribution, Numeric
from hpo.space.refinement import RefineSettings
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
    data: DataSpec | None  # None: a trainable's study without a data: section
    model: dict[str, Any]
    train: dict[str, Any]
    search: SearchSpec
    gap: GapSpec
    sanity: SanitySpec
    tracking: TrackingSpec
    source: str | None = None
    # the user's whole loop, "module:fit" (``fit(config, trial)``); None: hpo's own loop
    trainable: str | None = None
    # files or folders that travel to a Ray cluster's workers with the study (the user's code)
    code: tuple[str, ...] = ()

    @property
    def folder(self) -> Path | None:
        """The study file's folder: where the user's modules are looked up first."""
        return study_folder(self.source)

    @property
    def builder(self) -> str | None:
        """``model.builder``: the user's network, "module:build"; None: the factory's."""
        return self.model.get("builder")

    @property
    def own_code(self) -> bool:
        """Whether trials run any of the user's code (a trainable, a builder or a loader)."""
        return bool(self.trainable or self.builder
                    or (self.data is not None and self.data.source == "python"))

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
        """The field's own limits (lr > 0, 0 <= dropout < 1); none for the user's own keys."""
        r = SEARCHABLE[name][1] if name in SEARCHABLE and self.trainable is None else None
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

    def strategy(self) -> str:
        """The search this study runs, in a line (``hpo validate`` prints it)."""
        s = self.search
        if not self.distributions():
            return "nothing searched: one trial"
        sampling = {"random": "random sampling (the notes' method)",
                    "qmc": "quasi-random (Sobol) sampling",
                    "tpe": "TPE sampling within each round"
                    }[s.sampler]
        early = ", ASHA stopping poor trials early" if s.scheduler == "asha" else ""
        return (f"{s.rounds} round(s) x {s.trials_per_round} trials, {sampling}{early}; between "
                f"rounds each range narrows to the best {s.top_fraction:.0%} of trials, or "
                f"widens x{s.widen:g} when the best sits at its edge")

    def to_dict(self) -> dict[str, Any]:
        """The resolved study (every default filled in), as YAML-ready plain data."""
        out: dict[str, Any] = {"name": self.name, "seed": self.seed}
        if self.trainable is not None:
            out["trainable"] = self.trainable
        if self.code:
            out["code"] = list(self.code)
        for section in SECTION_ORDER:
            value = getattr(self, section)
            if value is None:  # a trainable's study may have no data: section
                continue
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
    """Read and validate a study file; raises SpecError listing every problem (or the one
    limit it breaks: see ``hpo.config._yaml``)."""
    source = str(path)
    raw = read_yaml(path)  # within limits: size, aliases
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
    top_allowed = ("name", "seed", *TOP_LEVEL, *SECTION_ORDER)
    for key in raw:
        if key not in top_allowed:
            problems.append(unknown_key(str(key), key, list(top_allowed)))

    name = _study_name(raw, default_name, problems)
    seed = parse_field(raw, "seed", Number(low=0, integer=True), 0, "seed", problems)
    trainable = parse_field(raw, "trainable", Text(), None, "trainable", problems)
    code = _code(raw, source, problems)
    sections = {section: _section(raw, section, trainable, problems) for section in SECTION_ORDER}
    if trainable is not None and not raw.get("data"):
        sections["data"] = None  # the user's loop may bring its own data
    problems += _metric_problems(sections["search"], trainable)
    problems += _own_code_problems(trainable, sections, source, problems)

    spec = None
    if not problems:
        spec = Spec(name=name, seed=seed, source=source, trainable=trainable, code=code,
                    **sections)
        problems += _cross_checks(spec)
    if problems:
        raise SpecError(problems, source)
    assert spec is not None  # no problems: it was built above
    return spec



#: A study's name names its folder under --study-root and its MLflow experiment: a name, never
#: a path (no separator, no "..", not hidden) and short enough for any file system.
NAME_RULE = re.compile(r"(?!\.)(?!.*\.\.)[A-Za-z0-9._-]{1,100}")
NAME_ALLOWED = ("ASCII letters, digits and - _ . (not starting with '.', no '..'), at most 100 "
                "characters")


def _study_name(raw: dict, default_name: str, problems: list[Problem]) -> str:
    """``name:``, else the study file's stem; a problem at ``name`` when it is no name."""
    given = raw.get("name")
    if given is None:
        if not NAME_RULE.fullmatch(default_name):
            problems.append(Problem(
                "name", f"the study is named after its file, and {default_name!r} is not a "
                "study name: set `name:` in the study file", has_given=False,
                allowed=NAME_ALLOWED))
        return default_name
    before = len(problems)
    name = parse_field(raw, "name", Text(optional=True), default_name, "name", problems)
    if len(problems) == before and not NAME_RULE.fullmatch(name):
        problems.append(Problem("name", "not a study name: it names the study's folder under "
                                "--study-root and its MLflow experiment", name, NAME_ALLOWED))
    return name

def study_folder(source: str | None) -> Path | None:
    """The folder of the study file ``source`` (None for a study given as data)."""
    return Path(source).resolve().parent if source else None


#: Top-level keys besides name, seed and the sections.
TOP_LEVEL = ("trainable", "code")


def _section(raw: dict, section: str, trainable: str | None, problems: list[Problem]) -> Any:
    """One section parsed by its rules: with a trainable, ``model:`` and ``train:`` are the
    user's own keys; with ``model.builder``, the model section is the builder's."""
    body = raw.get(section) or {}
    if not isinstance(body, dict):
        problems.append(Problem(section, "must be a mapping", body, f"keys under {section}: ..."))
        body = {}
    if section in SEARCHABLE_SECTIONS and trainable is not None:
        return free_section(body, section, problems)
    if section == "model" and "builder" in body:
        return builder_section(body, problems)
    if section in SEARCHABLE_SECTIONS:
        return searchable_section(body, section, SEARCHABLE_SECTIONS[section], problems)
    if section == "search":
        return plain_section(body, section, SearchSpec, problems,
                             bounds_extra=_own_numeric(raw))
    return plain_section(body, section, PLAIN_SECTIONS[section], problems)


def _own_numeric(raw: dict) -> tuple[str, ...]:
    """The user's own model/train keys (a trainable's, a builder's): search.bounds may name
    them too."""
    own = []
    for section in SEARCHABLE_SECTIONS:
        body = raw.get(section)
        if isinstance(body, dict) and (raw.get("trainable") is not None or "builder" in body):
            own += [k for k in body if isinstance(k, str) and k not in SEARCHABLE]
    return tuple(own)


def _code(raw: dict, source: str | None, problems: list[Problem]) -> tuple[str, ...]:
    """``code``: files or folders (relative to the study file) shipped to a cluster's workers."""
    paths = parse_field(raw, "code", ListOf(Text(optional=False)), (), "code", problems)
    base = study_folder(source) or Path.cwd()
    for i, path in enumerate(paths):
        if not (base / path).exists():
            problems.append(Problem(f"code[{i}]", "no such file or folder", path,
                                    f"a path relative to the study file's folder ({base})"))
    return tuple(paths)


def _metric_problems(search: SearchSpec, trainable: str | None) -> list[Problem]:
    """hpo's own loop reports METRICS only; any other metric is a trainable's, and hpo cannot
    know which way it improves."""
    if search.metric in METRICS:
        return []
    if trainable is None:
        return [Problem("search.metric", "unknown value", search.metric, " | ".join(METRICS)
                        + " (any metric your trainable reports, with a trainable)")]
    if search.mode is None:
        return [Problem("search.mode", f"hpo does not know which way {search.metric!r} "
                        "improves: say it", None, "max | min")]
    return []


def _own_code_problems(trainable: str | None, sections: dict[str, Any], source: str | None,
                       problems: list[Problem]) -> list[Problem]:
    """Each "module:function" of the user's imports and takes what hpo calls it with (checked
    only where the field itself is well formed)."""
    folder = study_folder(source)
    data, model = sections["data"], sections["model"]
    named = {"trainable": trainable, "model.builder": model.get("builder"),
             "data.loader": getattr(data, "loader", None)}
    broken = {p.path for p in problems}
    return [p for field, text in named.items() if text is not None and field not in broken
            for p in usercode.problems(text, field=field, folder=folder)]


def _cross_checks(spec: Spec) -> list[Problem]:
    """The rules between fields: within the data section, between data and model, within the
    model section (``models.validate.relation_problems``), and search.bounds against ranges."""
    problems = _bounds_problems(spec)
    if spec.data is not None:
        problems = data_problems(spec.data) + _shape_problems(spec) + problems
    if spec.trainable is None:
        problems += relation_problems(spec.model)
    return problems


def _shape_problems(spec: Spec) -> list[Problem]:
    """The convnet needs images (C, H, W): csv features and pca/whiten output are flat."""
    problems = []
    d = spec.data
    flattening = [s for s in d.preprocess if s in FLATTENING]
    arch = spec.model.get("arch", "mlp")
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
        section = "model" if name in spec.model else "train"
        value = getattr(spec, section).get(name)
        if isinstance(value, Numeric) and (value.low < lo or value.high > hi):
            problems.append(Problem(f"{section}.{name}", f"range lies outside search.bounds.{name}",
                                    value.to_yaml(), f"within [{lo:g}, {hi:g}]"))
    return problems
