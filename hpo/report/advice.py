"""What the trials say, in the notes' words: one sentence per finding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hpo.report.tables import fmt_range, fmt_value
from hpo.space.distributions import Distribution, Float
from hpo.trial.record import TrialRecord
from hpo.trial.status import FLAGS, TARGET_UPDATE_RATIO, TrialStatus, power_of_ten

__all__ = ["advice"]


def advice(records: Sequence[TrialRecord], *, metric: str, gap_threshold: float,
           last_ranges: Mapping[str, Distribution] | None = None) -> list[str]:
    """What the trials say, in the notes' words: one sentence per finding. ``last_ranges`` are
    the last round's ranges, as its table shows them: advice about a range reads those."""
    out: list[str] = []
    done = [r for r in records if r.finished]
    if not done:
        return ["no trial finished: look at the failed runs' hpo.error tags"]
    over = [r for r in done if r.status is TrialStatus.OVERFITTING]
    if over:
        out.append(f"{len(over)} of {len(done)} trials overfit (train - val accuracy > "
                   f"{gap_threshold:g}): increase regularization (weight_decay, dropout) or "
                   f"reduce capacity (fewer or narrower layers).")
    under = [r for r in done if r.status is TrialStatus.UNDERFITTING]
    if under:
        out.append(f"{len(under)} trials underfit (train and val accuracy both low): raise "
                   f"capacity, train longer, or look at the learning rate.")
    diverged = [r for r in done if r.status is TrialStatus.DIVERGED]
    if diverged:
        trained = [r for r in done if r.status is not TrialStatus.DIVERGED]
        out.append(_divergence(diverged, trained, last_ranges))
    target = power_of_ten(TARGET_UPDATE_RATIO)
    for flag, text in FLAGS.items():
        hit = [r for r in done if flag in r.flags]
        if hit:
            out.append(f"{len(hit)} trials with {text} (the notes aim for ~{target})."
                       if flag.startswith("update") else f"{len(hit)} trials with {text}.")
    if not out:
        out.append(f"no trial overfit, underfit or diverged, and update/weight ratios stayed "
                   f"near {target}.")
    return out


def _divergence(diverged: list[TrialRecord], trained: list[TrialRecord],
                last_ranges: Mapping[str, Distribution] | None) -> str:
    """Where the learning rate diverged, said so that it agrees with the round tables: an
    upper end is "too high" only if the last round's range still reaches the diverged lrs."""
    said = f"{len(diverged)} trials diverged (loss exploded)"
    lrs = sorted(r.params["lr"] for r in diverged if "lr" in r.params)
    if not lrs:
        return (f"{said}: compare their init, batchnorm and weight_decay with the trials that "
                f"trained.")
    low, high = fmt_value(lrs[0]), fmt_value(lrs[-1])
    said += f" at lr {low}" + (f" to {high}" if high != low else "")
    healthy = sorted(r.params["lr"] for r in trained if "lr" in r.params)
    if healthy and lrs[0] <= healthy[-1]:
        return (f"{said}, where other trials trained (up to lr {fmt_value(healthy[-1])}): not the "
                f"learning rate alone; compare their init, batchnorm and weight_decay.")
    if healthy:
        said += f"; the highest lr that trained was {fmt_value(healthy[-1])}"
    last = (last_ranges or {}).get("lr")
    if isinstance(last, Float) and last.high < lrs[0]:
        return (f"{said}: the last round's lr range {fmt_range(last)} already stays below "
                f"them.")
    return f"{said}: the learning rate's upper end is too high; keep it below {fmt_value(lrs[0])}."
