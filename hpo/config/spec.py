"""The study file: typed sections, search distributions, and every input error in one pass.

Pure: imports neither torch, Ray, Optuna nor MLflow, so ``hpo validate`` is fast. Each section is
a frozen dataclass whose fields carry their rule (what is allowed) in ``metadata``; the parser
walks those fields, so a default and its rule are written once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpo.errors import Problem, SpecError
from hpo.trial.direction import Direction
from hpo.trial.config import OPTIMIZERS, TrainConfig
from hpo.trial.metrics import METRICS
from hpo.search.space import Categorical, Distribution, Numeric, is_distribution_form, parse_distribution
from models.config import ModelConfig
from models.registry import ACTIVATIONS, ARCHITECTURES, INITIALIZERS, Registry

__all__ = [
    "DataSpec",
    "GapSpec",
    "METRICS",
    "SanitySpec",
    "SearchSpec",
    "Spec",
    "TrackingSpec",
    "TrainConfig",
    "load_spec",
    "parse_spec",
]


_MISSING = object()


class Invalid(ValueError):
    """A value broke its rule; ``allowed`` says what the rule accepts."""

    def __init__(self, message: str, allowed: str | None = None) -> None:
        super().__init__(message)
        self.allowed = allowed


# ----------------------------------------------------------------------------- rules


class Rule:
    """What one field accepts. ``parse`` returns the typed value or raises Invalid."""

    allowed: str = ""

    def parse(self, value: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Rule):
    """A real or whole number within limits; ``*_open`` makes a limit exclusive."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False

    @property
    def allowed(self) -> str:  # type: ignore[override]
        kind = "a whole number" if self.integer else "a number"
        lo, hi = self.low, self.high
        if lo == -math.inf and hi == math.inf:
            text = kind
        elif hi == math.inf:
            text = f"{kind} {'>' if self.low_open else '>='} {_num(lo)}"
        elif lo == -math.inf:
            text = f"{kind} {'<' if self.high_open else '<='} {_num(hi)}"
        else:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            text = f"{kind} in {left}{_num(lo)}, {_num(hi)}{right}"
        return text + (" or null" if self.optional else "")

    def parse(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid("wrong type", self.allowed)
        if self.integer and int(value) != value:
            raise Invalid("not a whole number", self.allowed)
        if not self.contains(value):
            raise Invalid("out of range", self.allowed)
        return int(value) if self.integer else float(value)

    def contains(self, x: float) -> bool:
        if math.isnan(x):
            return False
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def limits(self) -> tuple[float, float]:
        """Closed limits for refinement: open ends pulled in by a hair."""
        lo = self.low + (1e-12 if self.low_open and self.low == 0 else 0.0)
        hi = self.high - (1e-3 if self.high_open and math.isfinite(self.high) else 0.0)
        return lo, hi


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class OneOf(Rule):
    """A name from a fixed list or a registry."""

    names: tuple[str, ...] | Registry
    optional: bool = False

    def _known(self) -> list[str]:
        return self.names.names() if isinstance(self.names, Registry) else list(self.names)

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return " | ".join(self._known()) + (" | null" if self.optional else "")

    def parse(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or value not in self._known():
            raise Invalid("unknown value" if isinstance(value, str) else "wrong type", self.allowed)
        return value


@dataclass(frozen=True)
class Flag(Rule):
    allowed: str = "true | false"

    def parse(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise Invalid("wrong type", self.allowed)
        return value


@dataclass(frozen=True)
class Text(Rule):
    """A string; ``path`` ones must name an existing file or folder."""

    optional: bool = True
    path: bool = False

    @property
    def allowed(self) -> str:  # type: ignore[override]
        what = "an existing path" if self.path else "a string"
        return what + (" or null" if self.optional else "")

    def parse(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or not value:
            raise Invalid("wrong type", self.allowed)
        if self.path and not os.path.exists(value):
            raise Invalid("no such file or folder", self.allowed)
        return value


@dataclass(frozen=True)
class ListOf(Rule):
    """A non-empty (unless ``empty``) list whose items follow ``item``."""

    item: Rule
    empty: bool = False

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return f"a {'' if self.empty else 'non-empty '}list of ({self.item.allowed})"

    def parse(self, value: Any) -> Any:
        if not isinstance(value, list) or (not value and not self.empty):
            raise Invalid("wrong type", self.allowed)
        try:
            return tuple(self.item.parse(v) for v in value)
        except Invalid:
            raise Invalid("bad item", self.allowed) from None


@dataclass(frozen=True)
class Finetune(Rule):
    allowed: str = "all | classifier | a whole number >= 1 (train only that many final layers)"

    def parse(self, value: Any) -> Any:
        if value in ("all", "classifier"):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise Invalid("unknown value", self.allowed)


@dataclass(frozen=True)
class Pack(Rule):
    allowed: str = "auto | a whole number >= 1"

    def parse(self, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 1):
            return value
        raise Invalid("unknown value", self.allowed)


@dataclass(frozen=True)
class Resources(Rule):
    allowed: str = "{cpu: number > 0, gpu: number >= 0} (fractions allowed)"

    def parse(self, value: Any) -> Any:
        if not isinstance(value, dict) or set(value) - {"cpu", "gpu"}:
            raise Invalid("wrong type", self.allowed)
        cpu, gpu = value.get("cpu", 1), value.get("gpu", 0)
        if not (_is_number(cpu) and cpu > 0 and _is_number(gpu) and gpu >= 0):
            raise Invalid("out of range", self.allowed)
        return {"cpu": float(cpu), "gpu": float(gpu)}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def rule(r: Rule, default: Any = _MISSING, *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field that carries its rule."""
    if factory is not None:
        return field(default_factory=factory, metadata={"rule": r})
    return field(default=default, metadata={"rule": r})


# ----------------------------------------------------------------------------- sections

SOURCES = ("digits", "mnist", "fashion_mnist", "cifar10", "npz", "csv")
PREPROCESS = ("zero_center", "per_channel_mean", "normalize", "pca", "whiten")


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    source: str = rule(OneOf(SOURCES), "digits")  # where the examples come from
    path: str | None = rule(Text(path=True), None)  # file or folder for file-based sources
    # mnist | fashion_mnist | cifar10: fetch the standard files missing from data.path (default
    # ~/.cache/hpo/<source>), each verified by its checksum; files already there are reused.
    download: bool = rule(Flag(), False)
    url: str | None = rule(Text(), None)  # folder URL holding the files; default: official mirror
    # '<md5 or sha256 hex>  <file>' lines, as md5sum/sha256sum print them; they replace the
    # official checksums of the files they name (needed when a mirror serves other files).
    checksums: tuple[str, ...] = rule(ListOf(Text(optional=False), empty=True), ())
    target: str | None = rule(Text(), None)  # csv only: the label column (default "target")
    val_fraction: float = rule(Number(0, 1, low_open=True, high_open=True), 0.2)  # stratified
    test_fraction: float = rule(Number(0, 1, high_open=True), 0.0)  # final evaluation only
    # Applied in order; statistics come from the training split only.
    preprocess: tuple[str, ...] = rule(ListOf(OneOf(PREPROCESS), empty=True), ("zero_center",))



#: Rules of the searchable sections, keyed by the config dataclasses' field names.
MODEL_RULES: dict[str, Rule] = {
    "arch": OneOf(ARCHITECTURES),
    "hidden": ListOf(Number(low=1, integer=True)),
    "activation": OneOf(ACTIVATIONS),
    "leaky_slope": Number(0, 1, high_open=True),
    "elu_alpha": Number(low=0, low_open=True),
    "maxout_k": Number(low=2, high=16, integer=True),
    "init": OneOf(INITIALIZERS),
    "init_std": Number(low=0, low_open=True),
    "init_constant": Number(),
    "batchnorm": Flag(),
    "dropout": Number(0, 1, high_open=True),
    "checkpoint": Text(path=True),
    "finetune": Finetune(),
}
TRAIN_RULES: dict[str, Rule] = {
    "epochs": Number(low=1, integer=True),
    "batch_size": Number(low=1, integer=True),
    "optimizer": OneOf(OPTIMIZERS),
    "lr": Number(low=0, low_open=True),
    "weight_decay": Number(low=0),
    "momentum": Number(0, 1, high_open=True),
}
#: Fields that are never searched (paths, modes of operation).
NOT_SEARCHABLE = {"checkpoint", "finetune"}
#: Regularization knobs that gap-aware refinement pushes up when the elite overfits.
REGULARIZATION = ("weight_decay", "dropout")

SEARCHABLE: dict[str, tuple[str, Rule]] = {
    **{k: ("model", r) for k, r in MODEL_RULES.items()},
    **{k: ("train", r) for k, r in TRAIN_RULES.items()},
}


@dataclass(frozen=True, kw_only=True)
class SearchSpec:
    metric: str = rule(OneOf(tuple(METRICS)), "val_accuracy")  # what "best" means
    mode: str | None = rule(OneOf(("max", "min"), optional=True), None)  # default: from metric
    sampler: str = rule(OneOf(("random", "qmc", "tpe")), "random")  # grid is not offered
    rounds: int = rule(Number(low=1, integer=True), 3)  # round 1 coarse, later rounds refine
    trials_per_round: int = rule(Number(low=1, integer=True), 24)
    top_fraction: float = rule(Number(0, 1, low_open=True), 0.25)  # the elite
    edge: float = rule(Number(0, 0.5, high_open=True), 0.1)  # "on the edge" within this fraction
    widen: float = rule(Number(low=1, low_open=True), 10.0)  # log ranges x widen; linear + width
    min_improvement: float = rule(Number(low=0), 0.001)  # early stop below this gain (no widening)
    bounds: dict[str, tuple[float, float]] = rule(Rule(), factory=dict)  # hard limits, see below
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
        """``mode``, else the metric's own direction (losses and the gap: min)."""
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


PLAIN_SECTIONS: dict[str, type] = {
    "data": DataSpec,
    "search": SearchSpec,
    "gap": GapSpec,
    "sanity": SanitySpec,
    "tracking": TrackingSpec,
}
SECTION_ORDER = ("data", "model", "train", "search", "gap", "sanity", "tracking")


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
        raise SpecError([Problem("(file)", f"cannot read: {exc.strerror}", has_given=False)], source)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([Problem(where, f"not valid YAML: {reason}", has_given=False)], source)
    return parse_spec(raw if raw is not None else {}, source=source, default_name=Path(path).stem)


def parse_spec(raw: Any, *, source: str | None = None, default_name: str = "study") -> Spec:
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

    name = _field(raw, "name", Text(optional=True), default_name, "name", problems) or default_name
    seed = _field(raw, "seed", Number(low=0, integer=True), 0, "seed", problems)

    sections: dict[str, Any] = {}
    for section in SECTION_ORDER:
        body = raw.get(section) or {}
        if not isinstance(body, dict):
            problems.append(Problem(section, "must be a mapping", body,
                                    f"keys under {section}: ..."))
            body = {}
        if section == "model":
            sections[section] = _searchable(body, "model", ModelConfig, MODEL_RULES, problems)
        elif section == "train":
            sections[section] = _searchable(body, "train", TrainConfig, TRAIN_RULES, problems)
        else:
            sections[section] = _plain_section(body, section, PLAIN_SECTIONS[section], problems)

    spec = None
    if not problems:
        spec = Spec(name=name, seed=seed, source=source, **sections)
        problems += _cross_checks(spec)
    if problems:
        raise SpecError(problems, source)
    assert spec is not None
    return spec


def _field(body: dict, key: str, r: Rule, default: Any, path: str, problems: list[Problem]) -> Any:
    if key not in body:
        return default
    try:
        return r.parse(body[key])
    except Invalid as exc:
        problems.append(Problem(path, str(exc), body[key], exc.allowed))
        return default


def _unknown_keys(body: dict, section: str, known: list[str], problems: list[Problem]) -> None:
    for key in body:
        if key not in known:
            problems.append(Problem(f"{section}.{key}", "unknown key", has_given=False,
                                    allowed=", ".join(known)))


def _plain_section(body: dict, section: str, cls: type, problems: list[Problem]) -> Any:
    fields = [f for f in dataclasses.fields(cls)]
    _unknown_keys(body, section, [f.name for f in fields], problems)
    values: dict[str, Any] = {}
    for f in fields:
        path = f"{section}.{f.name}"
        if f.name in body and is_distribution_form(body[f.name]):
            problems.append(Problem(path, "a search distribution is allowed only under model: "
                                    "and train:", body[f.name], f.metadata["rule"].allowed or None))
            continue
        if f.name == "bounds" and section == "search":
            values["bounds"] = _bounds(body.get("bounds", {}), problems)
            continue
        if f.name in body:
            values[f.name] = _field(body, f.name, f.metadata["rule"], None, path, problems)
    return cls(**{k: v for k, v in values.items() if v is not None or k in body})


def _bounds(raw: Any, problems: list[Problem]) -> dict[str, tuple[float, float]]:
    allowed = "a mapping from a numeric model/train field to [lo, hi] with lo < hi"
    if not isinstance(raw, dict):
        problems.append(Problem("search.bounds", "wrong type", raw, allowed))
        return {}
    out = {}
    numeric = [k for k, (_, r) in SEARCHABLE.items() if isinstance(r, Number)]
    for key, value in raw.items():
        path = f"search.bounds.{key}"
        if key not in numeric:
            problems.append(Problem(path, "not a numeric model/train field", has_given=False,
                                    allowed=", ".join(numeric)))
        elif (not isinstance(value, list) or len(value) != 2
              or not all(_is_number(v) for v in value) or not value[0] < value[1]):
            problems.append(Problem(path, "bounds must be [lo, hi] with lo < hi", value, allowed))
        else:
            out[key] = (float(value[0]), float(value[1]))
    return out


def _searchable(
    body: dict, section: str, cls: type, rules: dict[str, Rule], problems: list[Problem]
) -> dict[str, Any]:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    _unknown_keys(body, section, list(defaults), problems)
    values: dict[str, Any] = dict(defaults)
    for key, r in rules.items():
        if key not in body:
            continue
        raw, path = body[key], f"{section}.{key}"
        if is_distribution_form(raw):
            dist = _distribution(raw, key, r, path, problems)
            if dist is not None:
                values[key] = dist
        elif isinstance(raw, dict):
            problems.append(Problem(path, "a mapping must be one search distribution", raw,
                                    "a fixed value, or one of {choice: [...]}, {uniform: [lo, hi]},"
                                    " {loguniform: [lo, hi]}, {int: [lo, hi]}, {logint: [lo, hi]}"))
        else:
            values[key] = _field(body, key, r, defaults[key], path, problems)
    return values


def _distribution(raw: dict, key: str, r: Rule, path: str, problems: list[Problem]) -> Any:
    kind = next(iter(raw))
    if key in NOT_SEARCHABLE:
        problems.append(Problem(path, "this field cannot be searched", raw, r.allowed))
        return None
    if kind != "choice" and (not isinstance(r, Number) or r.optional):
        problems.append(Problem(path, f"`{kind}` needs a numeric field; use `choice`", raw,
                                r.allowed))
        return None
    try:
        dist = parse_distribution(raw)
    except ValueError as exc:
        problems.append(Problem(path, f"invalid {kind}: {exc}", raw, _DIST_HELP[kind]))
        return None
    if isinstance(dist, Categorical):
        for i, choice in enumerate(dist.choices):
            value = list(choice) if isinstance(choice, tuple) else choice
            try:
                r.parse(value)
            except Invalid as exc:
                problems.append(Problem(f"{path}.choice[{i}]", str(exc), value, exc.allowed))
        return dist
    assert isinstance(dist, Numeric) and isinstance(r, Number)
    if r.integer != dist.integer:
        want = "int or logint" if r.integer else "uniform or loguniform"
        problems.append(Problem(path, f"`{kind}` does not fit this field", raw,
                                f"{want} ({r.allowed})"))
        return None
    for end in (dist.low, dist.high):
        if not r.contains(end):
            problems.append(Problem(path, "range outside the field's limits", raw, r.allowed))
            break
    return dist


_DIST_HELP = {
    "choice": "{choice: [a, b, ...]} with distinct values",
    "uniform": "{uniform: [lo, hi]} with lo < hi",
    "loguniform": "{loguniform: [lo, hi]} with 0 < lo < hi",
    "int": "{int: [lo, hi]} whole numbers, lo < hi, inclusive",
    "logint": "{logint: [lo, hi]} whole numbers, 0 < lo < hi, inclusive",
}


def _cross_checks(spec: Spec) -> list[Problem]:
    problems = []
    d = spec.data
    from hpo.data._download import REMOTES, checksum_problem  # standard library only: stays fast

    fetchable = d.source in REMOTES
    if d.source != "digits" and d.path is None and not (d.download and fetchable):
        problems.append(Problem("data.path", f"source {d.source!r} reads files: a path is needed",
                                None, "an existing file or folder"
                                + (", or data.download: true" if fetchable else "")))
    if d.download and not fetchable:
        problems.append(Problem("data.download", f"source {d.source!r} cannot be downloaded",
                                True, f"false, or a source among {' | '.join(REMOTES)}"))
    for key in ("url", "checksums"):
        if getattr(d, key) and not d.download:
            problems.append(Problem(f"data.{key}", "used only when downloading",
                                    _plain(getattr(d, key)), "null / [], or data.download: true"))
    if d.url is not None and not d.url.startswith(("http://", "https://", "file://")):
        problems.append(Problem("data.url", "not a URL", d.url,
                                "http://, https:// or file:// and the folder holding the files"))
    for i, line in enumerate(d.checksums if fetchable else ()):
        why = checksum_problem(line, d.source)
        if why:
            problems.append(Problem(f"data.checksums[{i}]", why, line,
                                    "'<md5 or sha256 hex>  <file>' for "
                                    + ", ".join(REMOTES[d.source].files)))
    if d.target is not None and d.source != "csv":
        problems.append(Problem("data.target", "only the csv source has a target column",
                                d.target, "null unless data.source is csv"))
    if d.val_fraction + d.test_fraction >= 1:
        problems.append(Problem("data.test_fraction", "val_fraction + test_fraction must be < 1",
                                d.test_fraction, f"< {1 - d.val_fraction:g}"))
    # Shapes: pca/whiten leave flat (N, K) features and csv has only flat ones, while
    # per_channel_mean and the convnet need images (N, C, H, W).
    flattening = [s for s in d.preprocess if s in ("pca", "whiten")]
    if "per_channel_mean" in d.preprocess and (
            d.source == "csv" or (flattening and d.preprocess.index(flattening[0])
                                  < d.preprocess.index("per_channel_mean"))):
        problems.append(Problem("data.preprocess", "per_channel_mean needs images (N, C, H, W), "
                                "but " + ("csv features are flat" if d.source == "csv" else
                                          f"{flattening[0]} flattens them before it"),
                                list(d.preprocess), "per_channel_mean before pca/whiten; "
                                "zero_center for flat features"))
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
    if spec.model["finetune"] != "all" and spec.model["checkpoint"] is None:
        problems.append(Problem("model.finetune", "finetuning needs model.checkpoint",
                                spec.model["finetune"], "all, or set model.checkpoint"))
    for name, (lo, hi) in spec.search.bounds.items():
        section = SEARCHABLE[name][0]
        value = getattr(spec, section)[name]
        if isinstance(value, Numeric) and (value.low < lo or value.high > hi):
            problems.append(Problem(f"{section}.{name}", f"range lies outside search.bounds.{name}",
                                    value.to_yaml(), f"within [{lo:g}, {hi:g}]"))
    return problems
