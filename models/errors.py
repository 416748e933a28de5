"""The model factory's exceptions: what a caller gave it is wrong.

``models`` is the lowest layer and imports nothing of ``hpo``; ``hpo.errors`` builds on these
(its ``SpecError`` is a ``ConfigError``, its ``Problem`` is this one) and the ``hpo`` command
reports every ``ModelError`` as an input error (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "ModelError", "Problem", "UnknownNameError"]


class ModelError(Exception):
    """Base of every error the model factory raises on purpose: the input to it is wrong
    (a config value, an input shape, a class count, a checkpoint file, a finetune mode)."""


class UnknownNameError(ModelError):
    """A name that no registry knows; lists the known ones."""

    def __init__(self, kind: str, name: object, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(known)}")


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


class ConfigError(ModelError):
    """Every problem found in a config, collected in one pass (``problems``)."""

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.render())

    def __reduce__(self) -> tuple:  # copy and pickle (Ray, Tune) rebuild it from its problems
        return (type(self), (self.problems, self.source))

    def render(self) -> str:
        # A model config is the model section of a study file, hence the study file's wording.
        head = f"{self.source}: " if self.source else ""
        count = len(self.problems)
        lines = [f"{head}{count} problem{'s' if count != 1 else ''} in the study file:"]
        lines += [f"  - {p.render()}" for p in self.problems]
        return "\n".join(lines)
