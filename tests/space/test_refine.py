"""Coarse-to-fine refinement (hpo/refine.py): pure, so every case runs in milliseconds."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import hpo.space.refinement

from hpo.space.refinement import (
    ELIGIBLE_STATUSES,
    EXPLORING,
    Change,
    FinishedTrial,
    Reason,
    Refinement,
    RefineSettings,
    elite_of,
    refine,
    should_stop,
)
from hpo.space.distributions import Categorical, Distribution, Float, Int, Numeric

T = FinishedTrial


def settings(mode: str = "max", **kw) -> RefineSettings:
    return RefineSettings(mode=mode, **kw)


def trials_at(name: str, values: list, metrics: list[float] | None = None, **kw) -> list[T]:
    """One trial per value; by default the first value is the best (metric 1, 0.9, 0.8, ...)."""
    metrics = metrics if metrics is not None else [1.0 - 0.1 * i for i in range(len(values))]
    return [T({name: v}, m, **kw) for v, m in zip(values, metrics)]


def tspan(d: Numeric) -> float:
    return d.t_high - d.t_low


def assert_elite_inside(r: Refinement) -> None:
    for c in r.changes:
        for t in r.elite:
            assert c.new.contains(t.params[c.name]), (c, t.params[c.name])


def one(ranges: dict[str, Distribution], trials: list[T], s: RefineSettings) -> Change:
    r = refine(ranges, trials, s)
    assert_elite_inside(r)
    (c,) = r.changes
    return c


# ----------------------------------------------------------------------------- elite


def test_elite_size_is_max_of_three_and_top_fraction_of_eligible():
    ts = [T({}, float(i)) for i in range(40)]
    assert len(elite_of(ts, mode="max", top_fraction=0.25)) == 10
    assert len(elite_of(ts[:8], mode="max", top_fraction=0.25)) == 3  # ceil(2) < 3
    assert len(elite_of(ts[:2], mode="max", top_fraction=0.25)) == 2  # fewer than 3 eligible
    assert len(elite_of(ts[:9], mode="max", top_fraction=0.5)) == 5  # ceil(4.5)
    # 0.14 * 50 is 7.000000000000001 in floats: still 7, not 8.
    assert len(elite_of([T({}, 0.5)] * 50, mode="max", top_fraction=0.14)) == 7
    # n counts eligible trials only: 8 ok + 32 failed -> ceil(0.5 * 8) = 4.
    mixed = ts[:8] + [T({}, None, status="failed")] * 32
    assert len(elite_of(mixed, mode="max", top_fraction=0.5)) == 4


def test_elite_is_best_first_by_mode_and_ties_keep_input_order():
    ts = [T({"i": 0}, 0.5), T({"i": 1}, 0.9), T({"i": 2}, 0.1), T({"i": 3}, 0.9), T({"i": 4}, 0.3)]
    assert [t.params["i"] for t in elite_of(ts, mode="max", top_fraction=0.6)] == [1, 3, 0]
    assert [t.params["i"] for t in elite_of(ts, mode="min", top_fraction=0.6)] == [2, 4, 0]


@pytest.mark.parametrize(
    "bad",
    [
        T({"x": 0.5}, 99.0, status="diverged"),
        T({"x": 0.5}, 99.0, status="failed"),
        T({"x": 0.5}, 99.0, status="stopped-by-someone"),
        T({"x": 0.5}, None),
        T({"x": 0.5}, math.nan),
        T({"x": 0.5}, math.inf),
        T({"x": 0.5}, True),
    ],
    ids=["diverged", "failed", "unknown-status", "no-metric", "nan", "inf", "bool"],
)
def test_failed_and_diverged_trials_never_enter_the_elite(bad):
    good = [T({"x": v}, m) for v, m in [(0.1, 0.5), (0.2, 0.4), (0.3, 0.3), (0.35, 0.2)]]
    for mode in ("max", "min"):
        elite = elite_of([bad, *good], mode=mode, top_fraction=1.0)
        assert bad not in elite and len(elite) == 4
    # and refine's best is the best good trial, even though `bad` claims a better metric
    r = refine({"x": Float(0.0, 1.0)}, [bad, *good], settings())
    assert r.best is good[0] and bad not in r.elite


def test_flagged_trials_are_eligible():
    ts = [T({}, 0.9, status=s) for s in sorted(ELIGIBLE_STATUSES)]
    assert elite_of(ts, mode="max", top_fraction=1.0) == ts


def test_no_eligible_trial_raises_a_clear_error():
    ts = [T({"x": 0.5}, None, status="failed"), T({"x": 0.6}, 1.0, status="diverged")]
    with pytest.raises(ValueError, match="no trial can guide refinement.*diverged.*failed"):
        refine({"x": Float(0.0, 1.0)}, ts, settings())
    with pytest.raises(ValueError, match="no trial can guide refinement"):
        refine({"x": Float(0.0, 1.0)}, [], settings())


def test_elite_trial_missing_a_parameter_or_out_of_range_raises():
    ranges = {"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)}
    with pytest.raises(ValueError, match="y: an elite trial"):
        refine(ranges, [T({"x": 0.5}, 1.0), T({"x": 0.5, "y": 0.5}, 0.5)], settings())
    with pytest.raises(ValueError, match="outside its range"):
        refine({"x": Float(0.0, 1.0)}, [T({"x": 1.5}, 1.0)], settings())
    with pytest.raises(ValueError, match="outside its range"):
        refine({"x": Float(1e-3, 1.0, log=True)}, [T({"x": 0.0}, 1.0)], settings())
    with pytest.raises(ValueError, match="not a finite number"):
        refine({"x": Float(0.0, 1.0)}, [T({"x": "relu"}, 1.0)], settings())
    with pytest.raises(ValueError, match="not among the choices"):
        refine({"a": Categorical(("relu", "tanh"))}, [T({"a": "elu"}, 1.0)], settings())


def test_a_value_a_hair_outside_the_range_is_float_noise_and_stays_inside():
    # 10 ** log10(x) round trips can land one ulp outside; refine tolerates it and keeps it in.
    hi = math.nextafter(1.0, 2.0)
    c = one({"x": Float(1e-3, 1.0, log=True)}, trials_at("x", [hi, 0.5, 0.4]), settings())
    assert c.new.contains(hi) and c.reason == "widened-high"


# ----------------------------------------------------------------------------- narrowing


def test_narrowing_a_log_range():
    # t-range [-5, 0], w = 5: elite t-span [-3, -2] padded by 0.1 * 5 = 0.5 each side.
    c = one({"lr": Float(1e-5, 1.0, log=True)}, trials_at("lr", [3e-3, 1e-3, 1e-2]), settings())
    assert c.reason == "narrowed" and c.best == 3e-3
    assert c.new == Float(c.new.low, c.new.high, log=True)
    assert c.new.low == pytest.approx(10**-3.5) and c.new.high == pytest.approx(10**-1.5)


def test_narrowing_a_linear_range():
    # [0, 1], w = 1: elite [0.4, 0.6] padded by 0.1 each side.
    c = one({"m": Float(0.0, 1.0)}, trials_at("m", [0.5, 0.4, 0.6]), settings())
    assert c.reason == "narrowed" and not c.new.log
    assert (c.new.low, c.new.high) == pytest.approx((0.3, 0.7))


def test_narrowing_stays_inside_the_old_range_and_reports_kept_when_unchanged():
    old = Float(1e-5, 1.0, log=True)
    c = one({"lr": old}, trials_at("lr", [1e-3, 1e-5, 1.0]), settings())
    assert c.new == old and c.reason == "kept"
    # padding that would cross the old ends is cut at them (exactly, no 10**log10 drift)
    c = one({"lr": old}, trials_at("lr", [1e-3, 2e-5, 1e-2]), settings())
    assert c.reason == "narrowed" and c.new.low == 1e-5 and c.new.high < 1.0


def test_no_collapse_to_a_point_when_the_elite_agrees():
    old = Float(1e-5, 1.0, log=True)
    c = one({"lr": old}, trials_at("lr", [1e-3] * 6), settings(min_width_fraction=0.2))
    assert c.reason == "narrowed"
    assert tspan(c.new) == pytest.approx(0.2 * tspan(old))
    # centred on the elite in t-space
    assert (c.new.t_low + c.new.t_high) / 2 == pytest.approx(-3.0)
    # near an end the minimum width shifts back inside the old range instead of crossing it
    lin = Float(0.0, 10.0)
    c = one({"x": lin}, trials_at("x", [1.5] * 4), settings(margin=0.0, min_width_fraction=0.5))
    assert c.reason == "narrowed" and (c.new.low, c.new.high) == pytest.approx((0.0, 5.0))


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_min_width_fraction_is_honoured(fraction):
    old = Float(0.0, 1.0)
    s = settings(margin=0.0, min_width_fraction=fraction)
    c = one({"x": old}, trials_at("x", [0.5] * 3), s)
    assert tspan(c.new) == pytest.approx(fraction)


def test_margin_is_a_share_of_the_old_width():
    c = one({"x": Float(0.0, 10.0)}, trials_at("x", [5.0, 4.0, 6.0]), settings(margin=0.05))
    assert (c.new.low, c.new.high) == pytest.approx((3.5, 6.5))


# ----------------------------------------------------------------------------- edges


def test_low_edge_of_a_log_range_moves_out_by_log10_widen_decades():
    # [1e-4, 1]: best at 1.2e-4 (u ~ 0.02); elite up to 1e-3, far side 1e-3 * 10**0.4.
    c = one({"lr": Float(1e-4, 1.0, log=True)}, trials_at("lr", [1.2e-4, 5e-4, 1e-3]),
            settings(widen=10.0))
    assert c.reason == "widened-low" and c.reason == Reason.WIDENED_LOW
    assert c.new.low == pytest.approx(1e-5) and c.new.high == pytest.approx(10 ** (-3 + 0.4))
    c = one({"lr": Float(1e-4, 1.0, log=True)}, trials_at("lr", [1.2e-4, 5e-4, 1e-3]),
            settings(widen=100.0))
    assert c.new.low == pytest.approx(1e-6)


def test_high_edge_of_a_log_range_walks_up():
    c = one({"lr": Float(1e-6, 1e-4, log=True)}, trials_at("lr", [9e-5, 5e-5, 3e-5]), settings())
    assert c.reason == "widened-high"
    assert c.new.high == pytest.approx(1e-3)
    assert c.new.low == pytest.approx(10 ** (math.log10(3e-5) - 0.2))  # elite low - 0.1 * w


def test_low_and_high_edges_of_a_linear_range_move_by_its_width():
    c = one({"x": Float(2.0, 4.0)}, trials_at("x", [2.1, 2.5, 3.0]), settings())
    assert c.reason == "widened-low" and c.new.low == pytest.approx(0.0)
    assert c.new.high == pytest.approx(3.2)  # 3.0 + 0.1 * 2
    c = one({"x": Float(2.0, 4.0)}, trials_at("x", [3.9, 3.5, 3.0]), settings())
    assert c.reason == "widened-high" and c.new.high == pytest.approx(6.0)
    assert c.new.low == pytest.approx(2.8)


def test_the_edge_test_is_inclusive_at_edge():
    rng = {"x": Float(0.0, 10.0)}
    below = [1.0, 5.0, 6.0]  # u = 0.1 exactly
    assert one(rng, trials_at("x", below), settings(edge=0.1)).reason == "widened-low"
    assert one(rng, trials_at("x", [1.01, 5.0, 6.0]), settings(edge=0.1)).reason == "narrowed"
    assert one(rng, trials_at("x", [9.0, 5.0, 6.0]), settings(edge=0.1)).reason == "widened-high"
    assert one(rng, trials_at("x", [8.99, 5.0, 6.0]), settings(edge=0.1)).reason == "narrowed"
    # edge = 0: only a best exactly on an end counts
    assert one(rng, trials_at("x", [0.0, 5.0]), settings(edge=0.0)).reason == "widened-low"
    assert one(rng, trials_at("x", [0.01, 5.0]), settings(edge=0.0)).reason == "narrowed"


def test_the_edge_test_is_in_t_space():
    # 1e-4 in [1e-5, 1] is at u = 0.2 in log space (but at 1e-4 of the way in linear terms).
    c = one({"lr": Float(1e-5, 1.0, log=True)}, trials_at("lr", [1e-4, 1e-3, 1e-2]), settings())
    assert c.reason == "narrowed"


def test_edge_keeps_the_whole_elite_even_when_it_is_spread():
    old = Float(1e-4, 1.0, log=True)
    c = one({"lr": old}, trials_at("lr", [1e-4, 0.9, 0.5]), settings())
    assert c.reason == "widened-low" and c.new.high == 1.0 and c.new.low == pytest.approx(1e-5)


# ----------------------------------------------------------------------------- bounds


def test_bounds_clip_a_widening_and_report_pinned():
    s = settings(bounds={"lr": (3e-5, 10.0)})
    c = one({"lr": Float(1e-4, 1.0, log=True)}, trials_at("lr", [1.1e-4, 2e-4, 5e-4]), s)
    assert c.reason == "pinned" and c.new.low == 3e-5  # exactly the bound
    s = settings(bounds={"x": (0.0, 5.0)})
    c = one({"x": Float(2.0, 4.0)}, trials_at("x", [3.95, 3.5, 3.0]), s)
    assert c.reason == "pinned" and c.new.high == 5.0


def test_an_edge_already_at_its_bound_is_pinned_and_stays():
    s = settings(bounds={"dropout": (0.0, 0.999)})
    c = one({"dropout": Float(0.0, 0.5)}, trials_at("dropout", [0.01, 0.05, 0.1]), s)
    assert c.reason == "pinned" and c.new.low == 0.0 and c.new.high < 0.5
    s = settings(bounds={"lr": (1e-4, 1.0)})
    c = one({"lr": Float(1e-4, 1.0, log=True)}, trials_at("lr", [0.9, 0.5, 0.2]), s)
    assert c.reason == "pinned" and c.new.high == 1.0


def test_a_bound_exactly_at_the_target_is_not_pinned():
    s = settings(bounds={"lr": (1e-5, 10.0)})  # log10(1e-4) - 1 == log10(1e-5)
    c = one({"lr": Float(1e-4, 1.0, log=True)}, trials_at("lr", [1.1e-4, 2e-4, 5e-4]), s)
    assert c.reason == "widened-low" and c.new.low == 1e-5


def test_a_bound_stopped_by_float_noise_is_not_pinned():
    # [0.1, 0.4] moved by its width: 0.1 - 0.3 is -0.20000000000000004 in floats, the bound -0.2.
    s = settings(bounds={"x": (-0.2, 1.0)})
    c = one({"x": Float(0.1, 0.4)}, trials_at("x", [0.1, 0.2, 0.3]), s)
    assert c.reason == "widened-low" and c.new.low == -0.2


def test_bounds_never_cut_into_the_range_already_searched():
    # the study file forbids this, but if a bound lies inside the old range it cannot take away
    # ground the elite stands on: the old end stays, and the move is pinned.
    s = settings(bounds={"lr": (1e-3, 10.0)})
    c = one({"lr": Float(1e-4, 1.0, log=True)}, trials_at("lr", [1.1e-4, 2e-4, 5e-4]), s)
    assert c.reason == "pinned" and c.new.low == 1e-4


def test_bounds_for_other_fields_do_not_apply():
    s = settings(bounds={"momentum": (0.0, 0.99)})
    c = one({"lr": Float(1e-4, 1.0, log=True)}, trials_at("lr", [1.1e-4, 2e-4, 5e-4]), s)
    assert c.reason == "widened-low"


def test_a_log_range_with_a_zero_lower_bound_widens_freely():
    s = settings(bounds={"weight_decay": (0.0, math.inf)})
    c = one({"weight_decay": Float(1e-6, 1e-2, log=True)},
            trials_at("weight_decay", [1e-6, 1e-5, 1e-4]), s)
    assert c.reason == "widened-low" and c.new.low == pytest.approx(1e-7)


# ----------------------------------------------------------------------------- integers


def test_integer_ranges_are_rounded_outward():
    c = one({"epochs": Int(1, 100)}, trials_at("epochs", [50, 40, 60]), settings())
    assert isinstance(c.new, Int) and not c.new.log
    assert (c.new.low, c.new.high) == (30, 70) and c.reason == "narrowed"
    c = one({"epochs": Int(1, 100)}, trials_at("epochs", [45, 40, 47]), settings(margin=0.0))
    # t-span [40, 47] then min width 0.2 * 99 = 19.8 around 43.5 -> [33.6, 53.4] -> [33, 54]
    assert (c.new.low, c.new.high) == (33, 54)


def test_logint_low_edge_widens_to_the_natural_limit_then_pins():
    s = settings(bounds={"hidden": (1.0, math.inf)})
    c = one({"hidden": Int(16, 256, log=True)}, trials_at("hidden", [16, 32, 64]), s)
    assert c.reason == "widened-low" and isinstance(c.new, Int) and c.new.log
    assert c.new.low == 1  # 10 ** (log10(16) - 1) = 1.6, rounded down
    assert c.new.high == math.ceil(10 ** (math.log10(64) + 0.1 * math.log10(16)))
    c2 = one({"hidden": c.new}, trials_at("hidden", [1, 2, 4]), s)
    assert c2.reason == "pinned" and c2.new.low == 1


def test_integer_ranges_never_collapse_to_one_integer():
    for old in (Int(1, 2), Int(4, 5, log=True), Int(0, 3), Int(1, 1000)):
        for v in range(old.low, min(old.high, 20) + 1):
            for edge in (0.0, 0.1, 0.4):
                c = one({"k": old}, trials_at("k", [v] * 3),
                        settings(edge=edge, bounds={"k": (old.low, old.high)}))
                assert isinstance(c.new, Int) and c.new.low < c.new.high
                assert old.low <= c.new.low and c.new.high <= old.high  # bounds hold


def test_integer_ranges_never_collapse_even_with_a_tiny_min_width():
    s = settings(margin=0.0, min_width_fraction=1e-12, edge=0.0)
    c = one({"k": Int(1, 10)}, trials_at("k", [5] * 3), s)
    assert c.new == Int(5, 6)  # a point grows upward...
    s = settings(margin=0.0, min_width_fraction=1e-12, edge=0.0, bounds={"k": (1.0, 10.0)})
    c = one({"k": Int(1, 10)}, trials_at("k", [10, 10, 9]), s)
    assert c.reason == "pinned" and c.new == Int(9, 10)
    c = one({"k": Int(4, 9)}, trials_at("k", [9] * 3), settings(
        margin=0.0, min_width_fraction=1e-12, bounds={"k": (1.0, 9.5)}))
    # ...or downward where a bound leaves no room above
    assert c.reason == "pinned" and c.new == Int(8, 9)


def test_integer_bounds_are_rounded_inward():
    # a bound of 2.5 for an int field allows 3, not 2
    s = settings(bounds={"k": (2.5, 100.0)})
    c = one({"k": Int(3, 10)}, trials_at("k", [3, 4, 5]), s)
    assert c.reason == "pinned" and c.new.low == 3


def test_integer_high_edge_moves_by_the_width():
    c = one({"k": Int(2, 10)}, trials_at("k", [10, 9, 8]), settings())
    assert c.reason == "widened-high" and c.new == Int(7, 18)  # 8 - 0.8 -> 7; 10 + 8


# ----------------------------------------------------------------------------- categorical


def test_categorical_keeps_the_elite_choices_in_original_order():
    old = Categorical(("relu", "tanh", "elu", "leaky_relu"))
    ts = trials_at("a", ["leaky_relu", "relu", "leaky_relu", "tanh", "elu"],
                   [0.9, 0.8, 0.7, 0.1, 0.0])
    c = one({"a": old}, ts, settings())
    assert c.reason == "narrowed" and c.new == Categorical(("relu", "leaky_relu"))
    assert c.best == "leaky_relu"
    c = one({"a": old}, ts, settings(top_fraction=1.0))
    assert c.reason == "kept" and c.new == old


def test_categorical_with_list_and_bool_choices():
    old = Categorical(((64,), (128, 64), (256,)))
    c = one({"hidden": old}, trials_at("hidden", [[128, 64], (128, 64), [64]]), settings())
    assert c.new == Categorical(((64,), (128, 64)))
    # True is not the choice 1
    with pytest.raises(ValueError, match="not among the choices"):
        refine({"b": Categorical((1, 2))}, trials_at("b", [True, 1, 2]), settings())
    c = one({"b": Categorical((False, True))}, trials_at("b", [True] * 3), settings())
    assert c.new == Categorical((True,))


# ----------------------------------------------------------------------------- mode


def test_mode_min_and_max_pick_opposite_elites():
    ranges = {"lr": Float(1e-5, 1.0, log=True)}
    ts = trials_at("lr", [1e-5, 2e-5, 3e-5, 1e-2, 2e-2, 3e-2, 0.9],
                   [0.1, 0.15, 0.2, 0.8, 0.85, 0.9, 0.5])
    hi = refine(ranges, ts, settings("max", top_fraction=0.4))
    lo = refine(ranges, ts, settings("min", top_fraction=0.4))
    assert hi.best.params["lr"] == 3e-2 and lo.best.params["lr"] == 1e-5
    assert hi.changes[0].reason == "narrowed" and lo.changes[0].reason == "widened-low"
    assert hi.ranges["lr"].low > 1e-3 and lo.ranges["lr"].high < 1e-3


def test_unknown_mode_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="`mode` must be one of max, min, but got 'maximize'"):
        RefineSettings(mode="maximize")
    with pytest.raises(ValueError, match="max, min"):
        elite_of([], mode="maximise", top_fraction=0.5)
    with pytest.raises(ValueError, match="max, min"):
        should_stop(previous_best=0.1, best=0.2, changes=[], min_improvement=0.0, mode="")


def test_settings_report_every_problem_at_once():
    with pytest.raises(ValueError) as err:
        RefineSettings(mode="max", top_fraction=0.0, edge=0.5, widen=1.0, min_width_fraction=0.0,
                       margin=-1.0, bounds={"lr": (1.0, 0.1)})
    text = str(err.value)
    for part in ("top_fraction", "edge", "widen", "min_width_fraction", "margin", "bounds['lr']"):
        assert part in text


# ----------------------------------------------------------------------------- regularization


def overfit_trials(n_over: int, n: int, **values) -> list[T]:
    """n trials, metric descending; the first n_over of them overfit."""
    return [T({k: v[i] for k, v in values.items()}, 1.0 - 0.01 * i, overfitting=i < n_over)
            for i in range(n)]


REG_RANGES = {
    "weight_decay": Float(1e-6, 1e-2, log=True),
    "dropout": Float(0.0, 0.5),
    "lr": Float(1e-4, 1.0, log=True),
}
REG_VALUES = {
    "weight_decay": [1e-4, 3e-5, 1e-3, 1e-6],
    "dropout": [0.2, 0.1, 0.3, 0.0],
    "lr": [1e-2, 3e-2, 2e-2, 0.5],
}
REG_BOUNDS = {"weight_decay": (0.0, math.inf), "dropout": (0.0, 0.999), "lr": (1e-12, math.inf)}


def test_regularization_shifts_up_when_most_of_the_elite_overfits():
    s = settings(bounds=REG_BOUNDS)
    r = refine(REG_RANGES, overfit_trials(2, 4, **REG_VALUES), s)  # elite of 3, 2 overfit
    assert_elite_inside(r)
    assert r.elite_overfits
    wd, do, lr = r.changes
    assert wd.reason == do.reason == "regularization-up"
    assert wd.new.low == 3e-5 and wd.new.high == pytest.approx(1e-1)  # elite min; +1 decade
    assert do.new.low == 0.1 and do.new.high == 0.999  # + width 0.5 -> 1.0, clipped by bound
    assert lr.reason == "narrowed"  # other ranges refine as usual


def test_regularization_up_needs_more_than_half_and_the_setting():
    s = settings(bounds=REG_BOUNDS)
    trials = overfit_trials(2, 4, **REG_VALUES)
    r = refine(REG_RANGES, trials, settings(bounds=REG_BOUNDS, top_fraction=1.0))  # 2 of 4
    assert not r.elite_overfits
    assert "regularization-up" not in [c.reason for c in r.changes]
    r = refine(REG_RANGES, trials, settings(bounds=REG_BOUNDS, adapt_regularization=False))
    assert "regularization-up" not in [c.reason for c in r.changes]
    # the status flag counts as overfitting too
    flagged = [T(t.params, t.metric, status="overfitting") for t in trials]
    assert refine(REG_RANGES, flagged, s).changes[0].reason == "regularization-up"
    # only the names in `regularization`, and only numeric ranges
    r = refine(REG_RANGES, trials, settings(bounds=REG_BOUNDS, regularization=("dropout",)))
    assert [c.reason for c in r.changes][:2] == ["narrowed", "regularization-up"]
    cat = {"dropout": Categorical((0.0, 0.2, 0.5))}
    r = refine(cat, overfit_trials(3, 3, dropout=[0.2, 0.2, 0.0]), s)
    assert r.changes[0].reason == "narrowed" and r.ranges["dropout"] == Categorical((0.0, 0.2))


def test_regularization_at_its_bound_is_pinned_and_never_collapses():
    s = settings(bounds={"dropout": (0.0, 0.5)})
    old = Float(0.0, 0.5)
    c = one({"dropout": old}, overfit_trials(3, 3, dropout=[0.3, 0.0, 0.4]), s)
    assert c.reason == "pinned" and c.new == old
    c = one({"dropout": old}, overfit_trials(3, 3, dropout=[0.5, 0.5, 0.5]), s)
    assert c.reason == "regularization-up" and c.new.high == 0.5
    assert tspan(c.new) == pytest.approx(0.2 * 0.5)


# ----------------------------------------------------------------------------- stopping


def ch(reason: str) -> Change:
    d = Float(0.0, 1.0)
    return Change(name="x", old=d, new=d, reason=Reason(reason), best=0.5)


def test_should_stop_when_nothing_widens_and_the_gain_is_small():
    quiet = [ch("narrowed"), ch("kept"), ch("pinned")]
    kw = dict(min_improvement=0.01, changes=quiet)
    assert should_stop(previous_best=0.90, best=0.905, mode="max", **kw)
    assert should_stop(previous_best=0.90, best=0.80, mode="max", **kw)  # got worse
    assert not should_stop(previous_best=0.90, best=0.92, mode="max", **kw)
    # exactly the minimum is enough to go on (binary-exact numbers: 0.625 - 0.5 == 0.125)
    assert not should_stop(previous_best=0.5, best=0.625, mode="max", changes=quiet,
                           min_improvement=0.125)
    assert should_stop(previous_best=0.50, best=0.495, mode="min", **kw)
    assert not should_stop(previous_best=0.50, best=0.40, mode="min", **kw)
    assert should_stop(previous_best=0.50, best=0.60, mode="min", **kw)  # loss went up
    assert not should_stop(previous_best=None, best=0.9, mode="max", **kw)  # first round


@pytest.mark.parametrize("reason", sorted(EXPLORING))
def test_should_not_stop_while_a_range_explores(reason):
    changes = [ch("narrowed"), ch(reason)]
    assert not should_stop(previous_best=0.9, best=0.9, changes=changes, min_improvement=0.01,
                           mode="max")
    assert should_stop(previous_best=0.9, best=0.9, changes=changes[:1], min_improvement=0.01,
                       mode="max")


# ----------------------------------------------------------------------------- properties


def random_range(rnd: random.Random) -> Distribution:
    kind = rnd.choice(["uniform", "loguniform", "int", "logint", "choice"])
    if kind == "choice":
        return Categorical(tuple(rnd.sample(["a", "b", "c", "d", "e"], rnd.randint(1, 5))))
    if kind == "uniform":
        lo = rnd.uniform(-5, 5)
        return Float(lo, lo + rnd.choice([1e-6, 0.01, 1.0, 100.0]) * rnd.uniform(0.1, 1))
    if kind == "loguniform":
        lo = 10 ** rnd.uniform(-9, 2)
        return Float(lo, lo * 10 ** rnd.uniform(0.01, 8), log=True)
    if kind == "int":
        lo = rnd.randint(-20, 20)
        return Int(lo, lo + rnd.choice([1, 2, 3, 10, 500]))
    lo = rnd.randint(1, 50)
    return Int(lo, lo * rnd.choice([2, 3, 10, 1000]), log=True)


def random_value(rnd: random.Random, d: Distribution):
    if isinstance(d, Categorical):
        return rnd.choice(d.choices)
    edge = rnd.random()
    if edge < 0.15:  # land on an end often, to exercise edges and pinning
        return d.low if edge < 0.075 else d.high
    if isinstance(d, Int):
        if d.log:
            return min(d.high, max(d.low, round(10 ** rnd.uniform(d.t_low, d.t_high))))
        return rnd.randint(d.low, d.high)
    if rnd.random() < 0.1:  # clusters: many trials on one value
        return d.from_t((d.t_low + d.t_high) / 2)
    return min(d.high, max(d.low, d.from_t(rnd.uniform(d.t_low, d.t_high))))


def random_bounds(rnd: random.Random, d: Numeric) -> tuple[float, float] | None:
    pick = rnd.random()
    if pick < 0.25:
        return None
    if pick < 0.5:  # tight: at the range's own ends
        return (d.low, d.high)
    if d.log:
        return (d.low / 10 ** rnd.uniform(0, 3), d.high * 10 ** rnd.uniform(0, 3))
    w = d.high - d.low
    return (d.low - w * rnd.uniform(0, 3), d.high + w * rnd.uniform(0, 3))


STATUSES = ["ok", "ok", "ok", "overfitting", "underfitting", "diverged", "failed"]


def test_property_elite_inside_and_ranges_well_formed():
    rnd = random.Random(20240531)
    seen: set[str] = set()
    for case in range(600):
        names = [f"p{i}" for i in range(rnd.randint(1, 4))]
        ranges = {n: random_range(rnd) for n in names}
        if rnd.random() < 0.4:  # make one of them a regularization knob
            ranges["dropout"] = random_range(rnd)
        bounds = {}
        for n, d in ranges.items():
            if isinstance(d, Numeric) and (b := random_bounds(rnd, d)) is not None:
                bounds[n] = b
        s = RefineSettings(
            mode=rnd.choice(["max", "min"]),
            top_fraction=rnd.choice([0.1, 0.25, 0.5, 1.0]),
            edge=rnd.choice([0.0, 0.1, 0.25, 0.49]),
            widen=rnd.choice([1.5, 10.0, 1000.0]),
            bounds=bounds,
            min_width_fraction=rnd.choice([0.05, 0.2, 1.0]),
            margin=rnd.choice([0.0, 0.1, 0.5]),
            adapt_regularization=rnd.random() < 0.7,
            regularization=("dropout",),
        )
        trials = []
        for _ in range(rnd.randint(1, 30)):
            status = rnd.choice(STATUSES)
            metric = None if status == "failed" else rnd.choice([rnd.random(), 0.5])
            trials.append(T({n: random_value(rnd, d) for n, d in ranges.items()}, metric,
                            status=status, overfitting=rnd.random() < 0.5))
        if not any(t.eligible for t in trials):
            with pytest.raises(ValueError):
                refine(ranges, trials, s)
            continue
        r = refine(ranges, trials, s)
        context = (case, s)

        assert list(r.ranges) == list(ranges), context
        assert [c.name for c in r.changes] == list(ranges), context
        assert r.best is r.elite[0] and all(t.eligible for t in r.elite), context
        assert_elite_inside(r)
        for c in r.changes:
            seen.add(c.reason)
            context = (case, c, s)
            old, new = c.old, c.new
            assert c.reason in set(Reason), context
            assert type(new) is type(old), context
            assert c.best == r.best.params[c.name], context
            if isinstance(old, Categorical):
                assert set(new.choices) <= set(old.choices), context
                assert c.reason in ("narrowed", "kept"), context
                assert (c.reason == "kept") == (new == old), context
                continue
            assert new.log == old.log, context
            lo_b, hi_b = s.bounds.get(c.name, (-math.inf, math.inf))
            assert min(lo_b, old.low) <= new.low and new.high <= max(hi_b, old.high), context
            # no collapse: integers keep two values; reals keep min_width_fraction of the width
            if isinstance(new, Int):
                assert new.low < new.high, context
            else:
                assert tspan(new) >= s.min_width_fraction * tspan(old) * (1 - 1e-6), context
            if c.reason in ("narrowed", "kept"):
                assert old.low <= new.low and new.high <= old.high, context
                assert (c.reason == "kept") == (new == old), context
            elif c.reason == "widened-low":
                assert new.low < old.low and new.high <= old.high, context
            elif c.reason == "widened-high":
                assert new.high > old.high and new.low >= old.low, context
            elif c.reason == "regularization-up":
                assert c.name == "dropout" and r.elite_overfits, context
                assert new.low >= old.low and new.high >= old.high and new != old, context
            elif c.reason == "pinned":
                # an end sits on the hard bound (integers: the first whole number inside it),
                # or on the old end where the bound did not reach past it
                if isinstance(new, Int):
                    lo_b = math.ceil(lo_b) if math.isfinite(lo_b) else lo_b
                    hi_b = math.floor(hi_b) if math.isfinite(hi_b) else hi_b
                on_bound = (
                    new.low <= lo_b or new.low == old.low or new.high >= hi_b
                    or new.high == old.high
                )
                assert on_bound, context
    # the generator must have reached every reason, or this test covers less than it claims
    assert seen == {r.value for r in Reason}, seen


@pytest.mark.parametrize("seed", range(5))
def test_property_a_lost_range_walks_to_the_optimum(seed):
    # The DESIGN's test of the whole, in miniature: the metric peaks at lr = 1e-2, the first
    # range is three decades below it; eight rounds of noiseless random trials find it.
    rnd = random.Random(seed)
    ranges: dict[str, Distribution] = {"lr": Float(1e-7, 1e-5, log=True)}
    s = settings(bounds={"lr": (1e-12, 10.0)})
    reasons = []
    for _ in range(8):
        d = ranges["lr"]
        trials = [T({"lr": (x := d.from_t(rnd.uniform(d.t_low, d.t_high)))},
                    -abs(math.log10(x) + 2.0)) for _ in range(24)]
        r = refine(ranges, trials, s)
        assert_elite_inside(r)
        reasons.append(r.changes[0].reason)
        ranges = r.ranges
    assert reasons[0] == "widened-high" and reasons.count("widened-high") >= 3
    assert ranges["lr"].contains(1e-2)
    assert math.log10(ranges["lr"].high / ranges["lr"].low) < 1.0  # and narrowed around it


# ----------------------------------------------------------------------------- wiring


def test_settings_from_a_study_file():
    from hpo.config.spec import parse_spec

    spec = parse_spec({
        "train": {"lr": {"loguniform": [1e-4, 1.0]}, "optimizer": {"choice": ["sgd", "adam"]}},
        "model": {"dropout": {"uniform": [0.0, 0.5]}},
        "search": {"metric": "val_loss", "top_fraction": 0.5, "edge": 0.2, "widen": 100,
                   "bounds": {"lr": [1e-6, 10.0]}},
        "gap": {"adapt_regularization": False},
    })
    s = spec.refine_settings()
    assert (s.mode, s.top_fraction, s.edge, s.widen) == ("min", 0.5, 0.2, 100.0)
    assert not s.adapt_regularization
    assert s.bounds == {"lr": (1e-6, 10.0), "dropout": spec.hard_bounds("dropout")}
    assert s.bounds["dropout"][0] == 0.0 and s.bounds["dropout"][1] < 1.0


def test_refine_imports_no_heavy_framework():
    code = (
        "import sys, hpo.space.refinement; "
        "bad = [m for m in ('torch', 'ray', 'optuna', 'mlflow') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = str(Path(hpo.space.refinement.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_when_every_trial_underfits_the_loss_ranks_them():
    """Near chance the accuracy is noise; the loss still falls as a too-low lr rises."""
    old = Float(1e-7, 1e-5, log=True)
    lrs = [1.2e-7, 4e-7, 1e-6, 3e-6, 6e-6, 9.5e-6]
    accuracy = [0.10, 0.07, 0.09, 0.08, 0.075, 0.08]  # noise: the "best" is at the low end
    trials = [FinishedTrial(params={"lr": lr}, metric=acc, status="underfitting",
                            loss=2.31 - 0.01 * i) for i, (lr, acc) in enumerate(zip(lrs, accuracy))]
    result = refine({"lr": old}, trials, RefineSettings(mode="max"))
    assert result.best.params["lr"] == 9.5e-6
    assert result.changes[0].reason == "widened-high"

    # with one trial above chance, the metric ranks again
    mixed = trials[:-1] + [FinishedTrial(params={"lr": 9.5e-6}, metric=0.6, status="ok",
                                         loss=1.2)]
    assert refine({"lr": old}, mixed, RefineSettings(mode="max")).best.metric == 0.6
    noisy = [FinishedTrial(params=t.params, metric=t.metric, status="ok", loss=t.loss)
             for t in trials]
    assert refine({"lr": old}, noisy, RefineSettings(mode="max")).best.params["lr"] == 1.2e-7
