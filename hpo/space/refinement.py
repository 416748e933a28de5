"""Coarse-to-fine refinement: (ranges of round k, finished trials) -> ranges of round k+1.

Pure: imports neither torch, Ray, Optuna nor MLflow. Numeric ranges are refined in "t-space"
(``log10(x)`` for log ranges, ``x`` otherwise), following DESIGN.md "Coarse-to-fine, precisely".
With ``a, b`` the old range in t-space and ``w = b - a`` its width:

* **Elite**: the best ``max(3, ceil(top_fraction * n))`` eligible trials, best first, where ``n``
  counts the eligible trials (status in ``ELIGIBLE_STATUSES`` and a finite metric). Failed and
  diverged trials say nothing about where the optimum is, so they neither enter the elite nor
  dilute it. Ties keep the trials' input order.
* **Edge test**: ``u = (t(best) - a) / w``; low edge when ``u <= edge``, high edge when
  ``u >= 1 - edge`` (``edge < 0.5``, so never both).
* **No edge** (``narrowed``): the elite's t-span padded by ``margin * w`` on each side, clipped to
  the old range, then grown to at least ``min_width_fraction * w`` (around its centre, shifted
  back inside the old range). A result equal to the old range is reported as ``kept``.
* **Edge** (``widened-low`` / ``widened-high``): the edge side moves outward by
  ``d = log10(widen)`` decades (log) or ``d = w`` (linear); the far side comes in to the elite's
  t-span plus the margin, as when narrowing, so the range walks toward the optimum instead of
  only growing. Hard bounds clip the moved side; when they stop it short of ``d`` (within a
  relative 1e-9), including when the old range already touched the bound, the reason is
  ``pinned``: the optimum may lie beyond the bound.
* **Gap-aware** (``regularization-up``): when strictly more than half of the elite overfits
  (``overfitting`` flag or status ``"overfitting"``) and ``adapt_regularization`` is on, every
  numeric range named in ``regularization`` shifts up instead: its low rises to the smallest
  elite value (never cutting the elite off), its high rises by ``d`` as above, clipped by the
  bound. A range that cannot move at all (high already at the bound, an elite value at the low)
  is ``pinned``.
* **Integers**: computed as real numbers, then rounded outward and kept inside the integer
  bounds; an ``Int`` always spans at least two integers.
* **Categorical**: the choices that appear in the elite, in their original order (``narrowed``
  when some were dropped, ``kept`` otherwise).

Whatever the reason, every elite value lies inside its new range (checked exactly, in natural
units, after the t-space arithmetic) and a numeric range never collapses to a point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hpo.space.distributions import Categorical, Distribution, Numeric
from hpo.trial.direction import Direction
from hpo.trial.status import TrialStatus


__all__ = [
    "Change",
    "ELIGIBLE_STATUSES",
    "EXPLORING",
    "FinishedTrial",
    "MIN_ELITE",
    "REGULARIZATION",
    "Reason",
    "RefineSettings",
    "Refinement",
    "elite_of",
    "refine",
    "should_stop",
]


class Reason(StrEnum):
    """Why a range changed; the value is what tables, tags and plots show."""

    NARROWED = "narrowed"
    WIDENED_LOW = "widened-low"
    WIDENED_HIGH = "widened-high"
    PINNED = "pinned"
    KEPT = "kept"
    REGULARIZATION_UP = "regularization-up"


#: Reasons that send the next round into ground not searched yet: while any is present the search
#: is still moving, so ``should_stop`` does not stop it. ``pinned`` cannot move, so it is absent.
EXPLORING = frozenset({Reason.WIDENED_LOW, Reason.WIDENED_HIGH, Reason.REGULARIZATION_UP})

#: Trial statuses whose metric may place the trial in the elite (flags, not failures).
ELIGIBLE_STATUSES = frozenset(s.value for s in TrialStatus if s.eligible)

#: Regularization knobs that gap-aware refinement pushes up when the elite overfits.
REGULARIZATION = ("weight_decay", "dropout")

#: The elite is never smaller than this (unless fewer trials are eligible).
MIN_ELITE = 3

# Relative tolerance for "the bound stopped the move" and "a value lies in the old range".
_EPS = 1e-9


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class FinishedTrial:
    """One trial of a round, as refinement sees it."""

    params: dict[str, Any]  # the sampled values, by field name ("lr", "activation", "hidden")
    metric: float | None  # the search metric; None when the trial produced none
    status: str = TrialStatus.OK  # a TrialStatus (or its value)
    overfitting: bool = False  # train - val gap above gap.threshold
    loss: float | None = None  # validation loss: the ranking when every trial underfits

    @property
    def eligible(self) -> bool:
        """Whether this trial may enter the elite: an eligible status and a finite metric."""
        return (
            self.status in ELIGIBLE_STATUSES
            and isinstance(self.metric, (int, float))
            and not isinstance(self.metric, bool)
            and math.isfinite(self.metric)
        )

    @property
    def overfits(self) -> bool:
        return self.overfitting or self.status == TrialStatus.OVERFITTING


@dataclass(frozen=True)
class Change:
    """What refinement did to one parameter's range."""

    name: str
    old: Distribution
    new: Distribution
    reason: Reason  # a StrEnum: compares equal to "narrowed", "pinned", ...
    best: Any  # the best trial's value of this parameter


@dataclass(frozen=True)
class RefineSettings:
    """How ranges are refined; ``Spec.refine_settings()`` reads them from a study."""

    mode: Direction  # which way the metric improves ("max" | "min")
    top_fraction: float = 0.25  # share of the eligible trials in the elite (at least MIN_ELITE)
    edge: float = 0.1  # best within this fraction of an end (in t-space) is "on the edge"
    widen: float = 10.0  # an edge moves a log range out by log10(widen) decades (linear: width)
    # Hard limits per field, natural units, inclusive, already intersected with the field's
    # natural limits; a missing field is unbounded. They never cut into the old range.
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    # A new range is at least this share of the old t-width: five rounds of pure narrowing
    # still leave 0.2**5 = 3e-4 of it, and noise in a small elite cannot shrink it to a point.
    min_width_fraction: float = 0.2
    # Padding on each side of the elite's t-span, as a share of the OLD t-width (not of the
    # elite span, which a 3-trial elite makes noisy): 0.1 of a 5-decade range is half a decade.
    margin: float = 0.1
    # Ranges pushed up when the elite overfits.
    regularization: tuple[str, ...] = REGULARIZATION
    adapt_regularization: bool = True  # gap.adapt_regularization

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in tuple(Direction):
            problems.append(f"`mode` must be one of max, min, but got {self.mode!r}")
        if not 0 < self.top_fraction <= 1:
            problems.append(f"`0 < top_fraction <= 1` must hold, but got {self.top_fraction!r}")
        if not 0 <= self.edge < 0.5:
            problems.append(f"`0 <= edge < 0.5` must hold, but got {self.edge!r}")
        if not self.widen > 1:
            problems.append(f"`widen > 1` must hold, but got {self.widen!r}")
        if not 0 < self.min_width_fraction <= 1:
            problems.append(
                f"`0 < min_width_fraction <= 1` must hold, but got {self.min_width_fraction!r}"
            )
        if not self.margin >= 0:
            problems.append(f"`margin >= 0` must hold, but got {self.margin!r}")
        for name, (lo, hi) in self.bounds.items():
            if not lo < hi:
                problems.append(f"bounds[{name!r}]: `lo < hi` must hold, but got ({lo}, {hi})")
        if problems:
            raise ValueError("invalid refine settings: " + "; ".join(problems) + ".")



@dataclass(frozen=True)
class Refinement:
    """The next round's ranges and how they came about."""

    ranges: dict[str, Distribution]  # same keys, same order as the input ranges
    changes: list[Change]  # one per parameter, in input order
    elite: list[FinishedTrial]  # best first
    best: FinishedTrial
    elite_overfits: bool = False  # more than half the elite overfits (regularization-up applied)


# ----------------------------------------------------------------------------- elite


def elite_of(
    trials: Sequence[FinishedTrial], *, mode: str, top_fraction: float
) -> list[FinishedTrial]:
    """The best ``max(MIN_ELITE, ceil(top_fraction * n))`` of the ``n`` eligible trials, best
    first; all of them when fewer are eligible, none when none is."""
    sign = Direction.of(mode).sign
    if not 0 < top_fraction <= 1:
        raise ValueError(f"`0 < top_fraction <= 1` must hold, but got {top_fraction!r}.")
    eligible = [t for t in trials if t.eligible]
    # The epsilon keeps 0.14 * 50 = 7.000000000000001 from rounding up to 8.
    k = max(MIN_ELITE, math.ceil(top_fraction * len(eligible) - 1e-9))
    if eligible and all(t.status == TrialStatus.UNDERFITTING and _finite(t.loss) for t in eligible):
        # Every trial sits near chance: its accuracy is noise, and "the best" would land
        # anywhere, edges included. The loss still falls toward the better settings (a too-low
        # learning rate learns a little more as it rises), so rank by it.
        return sorted(eligible, key=lambda t: t.loss)[:k]  # type: ignore[arg-type,return-value]
    # sorted() is stable: equal metrics keep their input order.
    return sorted(eligible, key=lambda t: -sign * t.metric)[:k]  # type: ignore[operator]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ----------------------------------------------------------------------------- refine


def refine(
    ranges: Mapping[str, Distribution],
    trials: Sequence[FinishedTrial],
    settings: RefineSettings,
) -> Refinement:
    """Next round's ranges from this round's ranges and finished trials.

    Raises ValueError when no trial is eligible, or when an elite trial lacks a parameter or
    holds a value outside this round's range (the trials must come from ``ranges``).
    """
    elite = elite_of(trials, mode=settings.mode, top_fraction=settings.top_fraction)
    if not elite:
        statuses = sorted({str(t.status) for t in trials})
        raise ValueError(
            f"no trial can guide refinement: none of the {len(trials)} trial(s) finished with "
            f"status in {sorted(ELIGIBLE_STATUSES)} and a finite metric (statuses seen: "
            f"{statuses}); check the trials' errors before running another round."
        )
    best = elite[0]
    overfits = sum(t.overfits for t in elite) > len(elite) / 2
    push_up = settings.adapt_regularization and overfits

    changes = []
    for name, old in ranges.items():
        values = _elite_values(name, elite)
        if isinstance(old, Categorical):
            new, reason = _refine_choice(old, values)
        elif isinstance(old, Numeric):
            new, reason = _refine_numeric(
                old,
                values,
                settings.bounds.get(name, (-math.inf, math.inf)),
                settings,
                regularize=push_up and name in settings.regularization,
            )
        else:
            raise TypeError(f"{name}: cannot refine a {type(old).__name__}; "
                            "expected Float, Int or Categorical.")
        changes.append(Change(name=name, old=old, new=new, reason=reason, best=values[0]))
    return Refinement(
        ranges={c.name: c.new for c in changes},
        changes=changes,
        elite=elite,
        best=best,
        elite_overfits=push_up,
    )


def _elite_values(name: str, elite: list[FinishedTrial]) -> list[Any]:
    """The elite's values of ``name``, best first; raises when a trial lacks one."""
    values = []
    for t in elite:
        if name not in t.params:
            raise ValueError(
                f"{name}: an elite trial (metric {t.metric}) has no value for it; every trial "
                f"must carry a value for each searched parameter (it has {sorted(t.params)})."
            )
        values.append(t.params[name])
    return values


def _refine_choice(old: Categorical, values: list[Any]) -> tuple[Categorical, Reason]:
    seen = [_freeze(v) for v in values]
    for v in seen:
        if not any(_same(v, c) for c in old.choices):
            raise ValueError(
                f"elite value {v!r} is not among the choices {list(old.choices)}; the trials "
                "must be sampled from the ranges being refined."
            )
    kept = tuple(c for c in old.choices if any(_same(v, c) for v in seen))
    if len(kept) == len(old.choices):
        return old, Reason.KEPT
    return Categorical(kept), Reason.NARROWED


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list | tuple) else value


def _same(a: Any, b: Any) -> bool:
    """Equal and of one kind: ``True`` is not the choice ``1``, but ``2`` is the choice ``2.0``."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    numbers = (int, float)
    both_numbers = (isinstance(a, numbers) and isinstance(b, numbers)
                    and not isinstance(a, bool) and not isinstance(b, bool))
    return a == b and (type(a) is type(b) or both_numbers)


def _refine_numeric(
    old: Numeric,
    values: list[Any],
    bounds: tuple[float, float],
    s: RefineSettings,
    *,
    regularize: bool,
) -> tuple[Numeric, Reason]:
    a, b = old.t_low, old.t_high
    w = b - a
    ts = [_t_of(old, v) for v in values]  # best first, each within [a, b]
    t_best, e_lo, e_hi = ts[0], min(ts), max(ts)
    pad, min_w = s.margin * w, s.min_width_fraction * w
    d = math.log10(s.widen) if old.log else w
    # Hard bounds in t-space, widened to cover the old range: they never cut searched ground.
    b_lo_nat, b_hi_nat = min(bounds[0], old.low), max(bounds[1], old.high)
    B_lo, B_hi = _bound_t(old, b_lo_nat), _bound_t(old, b_hi_nat)
    u = (t_best - a) / w

    if regularize:
        target = b + d
        hi = min(target, B_hi)
        lo, hi = _fit(e_lo, hi, (a, B_hi), min_w)
        reason = Reason.REGULARIZATION_UP
    elif u <= s.edge:
        target = a - d
        moved = max(target, B_lo)
        # _fit keeps the moved end where it is: it is the start of the container.
        lo, hi = _fit(moved, min(b, e_hi + pad), (moved, b), min_w)
        reason = Reason.PINNED if _stopped(moved, target) else Reason.WIDENED_LOW
    elif u >= 1 - s.edge:
        target = b + d
        moved = min(target, B_hi)
        lo, hi = _fit(max(a, e_lo - pad), moved, (a, moved), min_w)
        reason = Reason.PINNED if _stopped(moved, target) else Reason.WIDENED_HIGH
    else:
        lo, hi = _fit(max(a, e_lo - pad), min(b, e_hi + pad), (a, b), min_w)
        reason = Reason.NARROWED

    # Back to natural units; ends that sit on a known point take its exact value, so that
    # 10 ** log10(x) != x never moves an end off the old range or a bound.
    exact = {a: old.low, b: old.high, B_lo: b_lo_nat, B_hi: b_hi_nat}
    low = exact.get(lo, old.from_t(lo))
    high = exact.get(hi, old.from_t(hi))
    # The elite lies inside by construction in t-space; make it exact in natural units.
    low, high = min(low, *values), max(high, *values)
    new = _make(old, low, high, (b_lo_nat, b_hi_nat))

    if new == old and reason is Reason.NARROWED:
        reason = Reason.KEPT
    elif new == old and reason is Reason.REGULARIZATION_UP:
        reason = Reason.PINNED  # already at the bound, with an elite value at the low end
    return new, reason


def _t_of(old: Numeric, value: Any) -> float:
    """``value`` in t-space, checked to lie in the old range (up to float noise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"elite value {value!r} is not a finite number, but its range "
                         f"{old.to_yaml()} is numeric.")
    a, b = old.t_low, old.t_high
    tol = _EPS * max(1.0, abs(a), abs(b))
    if (old.log and value <= 0) or not a - tol <= old.to_t(value) <= b + tol:
        raise ValueError(f"elite value {value!r} lies outside its range {old.to_yaml()}; the "
                         "trials must be sampled from the ranges being refined.")
    return min(max(old.to_t(value), a), b)


def _bound_t(old: Numeric, x: float) -> float:
    if old.log and x <= 0:
        return -math.inf
    return old.to_t(x)


def _stopped(reached: float, target: float) -> bool:
    """Whether a moving end fell short of its target (a bound held it), beyond float noise."""
    return abs(reached - target) > _EPS * max(1.0, abs(target))


def _fit(lo: float, hi: float, within: tuple[float, float], min_w: float) -> tuple[float, float]:
    """``[lo, hi]`` grown to ``min_w`` around its centre and shifted back ``within``; it still
    covers the original ``[lo, hi]``. Needs ``within`` at least ``min_w`` wide."""
    if hi - lo >= min_w:
        return lo, hi
    centre = (lo + hi) / 2
    lo, hi = centre - min_w / 2, centre + min_w / 2
    if lo < within[0]:
        lo, hi = within[0], within[0] + min_w
    elif hi > within[1]:
        lo, hi = within[1] - min_w, within[1]
    # clamp away float noise, so an end meant to sit on the container's end is exactly on it
    return max(lo, within[0]), min(hi, within[1])


def _make(old: Numeric, low: float, high: float, bounds: tuple[float, float]) -> Numeric:
    """A range of ``old``'s kind; integers rounded outward, kept in bounds, two values at least."""
    if not old.integer:
        return old.with_bounds(low, high)
    lo_int = math.ceil(bounds[0] - _EPS) if math.isfinite(bounds[0]) else -math.inf
    lo_int = max(lo_int, 1) if old.log else lo_int  # a logint range starts at 1 or above
    hi_int = math.floor(bounds[1] + _EPS) if math.isfinite(bounds[1]) else math.inf
    low = max(math.floor(low + _EPS), lo_int)
    high = min(math.ceil(high - _EPS), hi_int)
    if low == high:  # the old range holds two integers at least, so one side has room
        if high + 1 <= hi_int:
            high += 1
        else:
            low -= 1
    return type(old)(low=low, high=high, log=old.log)


# ----------------------------------------------------------------------------- stopping


def should_stop(
    *,
    previous_best: float | None,
    best: float,
    changes: Sequence[Change],
    min_improvement: float,
    mode: str,
) -> bool:
    """Early stop: no range in ``changes`` explores new ground (``EXPLORING``) and the best
    metric improved on ``previous_best`` by less than ``min_improvement`` (a change for the worse
    counts as negative). Never stops after the first round (``previous_best`` None)."""
    sign = Direction.of(mode).sign
    if previous_best is None:
        return False
    if any(c.reason in EXPLORING for c in changes):
        return False
    return sign * (best - previous_best) < min_improvement
