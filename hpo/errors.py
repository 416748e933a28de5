"""One exception hierarchy. The CLI maps each branch to an exit code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class HpoError(Exception):
    """Base of every error hpo raises on purpose."""

    exit_code = 1


class InputError(HpoError):
    """The user's input is wrong (study file, path, option): exit 2, nothing run or logged."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located by a dotted path such as ``train.lr``."""

    path: str
    message: str
    given: Any = None
    allowed: str | None = None
    has_given: bool = True

    def render(self, source: str | None = None) -> str:
        where = f"{source}: " if source else ""
        text = f"{where}{self.path}: {self.message}"
        extras = []
        if self.has_given:
            extras.append(f"given {_show(self.given)}")
        if self.allowed:
            extras.append(f"allowed: {self.allowed}")
        if extras:
            text += f" ({'; '.join(extras)})"
        return text


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    return str(value).replace("'", "")


class SpecError(InputError):
    """Every problem found in a study file, collected in one pass."""

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        count = len(self.problems)
        lines = [f"{head}{count} problem{'s' if count != 1 else ''} in the study file:"]
        lines += [f"  - {p.render()}" for p in self.problems]
        return "\n".join(lines)


class DataError(InputError):
    """A data file is missing or malformed; the message names the file and the problem."""


class UnknownNameError(InputError):
    """A name that no registry knows; lists the known ones."""

    def __init__(self, kind: str, name: object, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(known)}")


class RunError(HpoError):
    """The study failed at run time (exit 1)."""


class TrackingUnreachable(RunError):
    """The MLflow tracking server did not answer before any trial ran."""


class SanityCheckFailed(RunError):
    """A babysitting check failed under ``sanity.strict``."""
