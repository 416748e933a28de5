"""One exception hierarchy. The CLI maps each branch to an exit code.

The model factory's errors (``models.errors``) are the lowest layer's; ``Problem`` and
``UnknownNameError`` are those, and a ``SpecError`` is also a ``models.errors.ConfigError``, so
code that catches the model factory's errors catches a study file's too. The CLI reports every
``ModelError`` as an input error (exit 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from models.errors import ConfigError, ModelError, Problem, UnknownNameError

__all__ = [
    "ConfigError",
    "DataError",
    "HpoError",
    "InputError",
    "ModelError",
    "Problem",
    "RunError",
    "SanityCheckFailed",
    "SpecError",
    "TrackingUnreachable",
    "TrialContractError",
    "UnknownNameError",
    "UserCodeError",
]


class HpoError(Exception):
    """Base of every error hpo raises on purpose."""

    exit_code = 1


class InputError(HpoError):
    """The user's input is wrong (study file, path, option): exit 2, nothing run or logged."""

    exit_code = 2


class SpecError(InputError, ConfigError):
    """Every problem found in a study file, collected in one pass.

    Each problem's given value is quoted up to ``QUOTE_CHARS`` characters, and its field path
    up to as many: a value of a million items (or a key of a million characters) is cut, not
    rendered whole first.
    """

    def render(self) -> str:
        full = self.problems
        self.problems = [_clipped(p) for p in full]
        try:
            return super().render()
        finally:
            self.problems = full


#: The most of a value (or a field path) an error message quotes.
QUOTE_CHARS = 200


class _Quoted:
    """A value's text as a ``Problem`` shows it (``str`` without quotes), already cut."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _clipped(p: Problem) -> Problem:
    """``p`` with its path, message and given value cut to what a message quotes."""
    cut = dataclasses.replace(p, path=_cut(p.path), message=_cut(p.message, 3 * QUOTE_CHARS))
    if not p.has_given or (isinstance(p.given, str) and len(p.given) <= QUOTE_CHARS):
        return cut
    if isinstance(p.given, str):  # in double quotes: Problem drops single ones from a _Quoted
        return dataclasses.replace(cut, given=_Quoted(f'"{p.given[:QUOTE_CHARS]}"... (cut)'))
    return dataclasses.replace(cut, given=_Quoted(quote(p.given)))


def _cut(text: str, limit: int = QUOTE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "... (cut)"


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``value`` as ``Problem`` shows it (Python's ``str``, no quotes), cut after ``limit``
    characters with "... (cut)"; only as much of it is rendered."""
    out, size = [], 0
    for piece in _pieces(value):
        out.append(piece)
        size += len(piece)
        if size > limit:
            return "".join(out)[:limit].replace("'", "") + "... (cut)"
    return "".join(out).replace("'", "")


def _pieces(value: Any) -> Iterator[str]:
    """``str(value)`` in pieces, lazily (a list of lists of ... is walked as far as read)."""
    if isinstance(value, list | tuple):
        yield "[" if isinstance(value, list) else "("
        for i, item in enumerate(value):
            yield ", " if i else ""
            yield from _pieces(item)
        yield "]" if isinstance(value, list) else ("," if len(value) == 1 else "") + ")"
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield ", " if i else ""
            yield from _pieces(key)
            yield ": "
            yield from _pieces(item)
        yield "}"
    elif isinstance(value, str):
        yield repr(value[:QUOTE_CHARS + 1])
    else:
        yield str(value)[:QUOTE_CHARS + 1]


class UserCodeError(SpecError):
    """The user's own code (``model.builder``, ``data.loader``, ``trainable``) cannot be
    imported or called as the study file says, or gave back what hpo cannot use."""


class DataError(InputError):
    """A data file is missing or malformed; the message names the file and the problem."""


class RunError(HpoError):
    """The study failed at run time (exit 1)."""


class TrialContractError(RunError):
    """A trial broke the trial contract (e.g. never reported ``search.metric``): that trial
    fails, the study goes on."""


class TrackingUnreachable(RunError):
    """The MLflow tracking server did not answer before any trial ran."""


class SanityCheckFailed(RunError):
    """A babysitting check failed under ``sanity.strict``."""
