"""Attributes swapped for the length of a block: how hpo's touches of Ray's internals
(``hpo.execution._ray_private``) and the benchmarks' timers set something and put it back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["swapped"]


@contextlib.contextmanager
def swapped(owner: Any, **values: Any) -> Iterator[None]:
    """``owner``'s attributes set to ``values`` while the block runs, and put back after."""
    before = {name: getattr(owner, name) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(owner, name, value)
