"""Plain-text tables for the terminal (and the markdown report)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpo.space.distributions import Categorical, Distribution, Numeric

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
