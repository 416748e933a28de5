"""What the trials say, in the notes' words: one sentence per finding."""

from __future__ import annotations

from collections.abc import Sequence

from hpo.report.tables import fmt_value
from hpo.trial.record import TrialRecord
from hpo.trial.status import FLAGS, TARGET_UPDATE_RATIO, TrialStatus, power_of_ten

__all__ = ["advice"]


def advice(records: Sequence[TrialRecord], *, metric: str, gap_threshold: float) -> list[str]:
    """What the trials say, in the notes' words: one sentence per finding."""
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
        lrs = sorted(r.params["lr"] for r in diverged if "lr" in r.params)
        where = f" at lr {fmt_value(lrs[0])} to {fmt_value(lrs[-1])}" if lrs else ""
        healthy = sorted(r.params["lr"] for r in done if r.status is not TrialStatus.DIVERGED and "lr" in r.params)
        top = f"; the highest lr that trained was {fmt_value(healthy[-1])}" if healthy else ""
        out.append(f"{len(diverged)} trials diverged (loss exploded){where}{top}: the learning "
                   f"rate's upper end is too high.")
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
