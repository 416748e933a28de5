"""Plain-text tables for the terminal (and the markdown report)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpo.space import Categorical, Distribution, Numeric

__all__ = ["fmt_range", "fmt_value", "table"]


def fmt_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.2e}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    return str(value)


def fmt_range(dist: Distribution | None) -> str:
    if dist is None:
        return "-"
    if isinstance(dist, Categorical):
        return "{" + ", ".join(fmt_value(c) for c in dist.choices) + "}"
    assert isinstance(dist, Numeric)
    tag = "log " if dist.log else ""
    return f"{tag}[{fmt_value(dist.low)}, {fmt_value(dist.high)}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, markdown: bool = False) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt_value(c) for c in r]
                                             for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if markdown:
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def advice(records: Sequence[Any], *, metric: str, gap_threshold: float) -> list[str]:
    """What the trials say, in the notes' words: one sentence per finding."""
    out: list[str] = []
    done = [r for r in records if r.status not in ("running", "failed")]
    if not done:
        return ["no trial finished: look at the failed runs' hpo.error tags"]
    over = [r for r in done if r.status == "overfitting"]
    if over:
        out.append(f"{len(over)} of {len(done)} trials overfit (train - val accuracy > "
                   f"{gap_threshold:g}): increase regularization (weight_decay, dropout) or "
                   f"reduce capacity (fewer or narrower layers).")
    under = [r for r in done if r.status == "underfitting"]
    if under:
        out.append(f"{len(under)} trials underfit (train and val accuracy both low): raise "
                   f"capacity, train longer, or look at the learning rate.")
    diverged = [r for r in done if r.status == "diverged"]
    if diverged:
        lrs = sorted(r.params["lr"] for r in diverged if "lr" in r.params)
        where = f" at lr {fmt_value(lrs[0])} to {fmt_value(lrs[-1])}" if lrs else ""
        healthy = sorted(r.params["lr"] for r in done if r.status != "diverged" and "lr" in r.params)
        top = f"; the highest lr that trained was {fmt_value(healthy[-1])}" if healthy else ""
        out.append(f"{len(diverged)} trials diverged (loss exploded){where}{top}: the learning "
                   f"rate's upper end is too high.")
    for flag, text in (("update-ratio-high", "update/weight ratio above 1e-2: learning rate "
                        "probably too high"),
                       ("update-ratio-low", "update/weight ratio below 1e-4: learning rate "
                        "probably too low"),
                       ("dead-units", "more than half of a layer's ReLU units dead: lower the "
                        "learning rate or use leaky_relu / elu / maxout"),
                       ("saturated-units", "more than half of a layer's units saturated: "
                        "smaller initial weights (xavier), batchnorm, or relu")):
        hit = [r for r in done if flag in getattr(r, "flags", [])]
        if hit:
            out.append(f"{len(hit)} trials with {text} (the notes aim for ~1e-3)."
                       if flag.startswith("update") else f"{len(hit)} trials with {text}.")
    if not out:
        out.append("no trial overfit, underfit or diverged, and update/weight ratios stayed "
                   "near 1e-3.")
    return out
