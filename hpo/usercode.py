"""The user's own code: a ``"module:function"`` string in the study file, found and checked.

A module is looked up in the study file's folder first, then the working directory, then the
installed packages, in the driver and in every Ray worker alike: the folder is put in front of
``sys.path`` where it exists (on this machine), and on a cluster the code travels with the
study in Ray's runtime environment, whose working directory a worker imports from.

Three places take a function, each with the parameters it is called with (``SIGNATURES``).
Every problem comes back as a ``Problem`` that names the field, the module and what went
wrong, so ``hpo validate`` reports it with the rest of the study file, before anything runs.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo.errors import Problem, UserCodeError

__all__ = ["SIGNATURES", "CodeRef", "load", "problems"]

#: The field that names a function -> the parameters hpo calls it with, and what it returns.
SIGNATURES: dict[str, tuple[tuple[str, ...], str]] = {
    "model.builder": (("config", "input_shape", "num_classes"), "a torch.nn.Module"),
    "data.loader": (("config",), "a dict of arrays or tensors (x_train, y_train, ...), or of "
                                 "torch Datasets (train, val, test)"),
    "trainable": (("config", "trial"), "nothing; it calls trial.report(epoch=k, **metrics)"),
}


@dataclass(frozen=True)
class CodeRef:
    """``module:function``; ``module`` may be dotted (a package's module)."""

    module: str
    function: str

    @classmethod
    def parse(cls, text: Any) -> CodeRef:
        """Raises ValueError saying what the form is."""
        if not isinstance(text, str) or text.count(":") != 1:
            raise ValueError("must be \"module:function\"")
        module, function = (part.strip() for part in text.split(":"))
        names = [*module.split("."), function]
        if not all(n.isidentifier() for n in names):
            raise ValueError("must be \"module:function\" with Python names")
        return cls(module, function)

    def __str__(self) -> str:
        return f"{self.module}:{self.function}"


def search_path(folder: str | os.PathLike[str] | None) -> None:
    """Put the study file's ``folder`` (where it exists on this machine) and the working
    directory in front of ``sys.path``, in that order, once."""
    for entry in reversed([p for p in (folder, os.getcwd()) if p is not None]):
        path = str(Path(entry).resolve())
        if Path(path).is_dir() and path not in sys.path[:2]:
            if path in sys.path:
                sys.path.remove(path)
            sys.path.insert(0, path)


def load(text: str, *, field: str, folder: str | os.PathLike[str] | None = None) -> Callable:
    """The function ``text`` names, imported as ``search_path`` says; a ``UserCodeError``
    (an input error naming ``field``) when it cannot be found, imported or called so."""
    fn, problem = _resolve(text, field=field, folder=folder)
    if problem is not None:
        raise UserCodeError([problem])
    return fn


def problems(text: Any, *, field: str, folder: str | os.PathLike[str] | None) -> list[Problem]:
    """What is wrong with the function ``text`` names, for the study-file validator."""
    return [p for p in (_resolve(text, field=field, folder=folder)[1],) if p is not None]


def _resolve(text: Any, *, field: str,
             folder: str | os.PathLike[str] | None) -> tuple[Any, Problem | None]:
    params, returns = SIGNATURES[field]
    allowed = f"\"module:function\" with {_signature(field)} -> {returns}"
    try:
        ref = CodeRef.parse(text)
    except ValueError as exc:
        return None, Problem(field, str(exc), text, allowed)
    search_path(folder)
    try:
        module = importlib.import_module(ref.module)
    except Exception as exc:  # noqa: BLE001 - any failure while importing is the user's to see
        where = f" (looked in {_places(folder)})" if isinstance(exc, ModuleNotFoundError) else ""
        return None, Problem(field, f"cannot import module {ref.module!r}: "
                             f"{_last_line(exc)}{where}", str(ref), allowed)
    fn = getattr(module, ref.function, None)
    if not callable(fn):
        return None, Problem(field, f"module {ref.module!r} ({_file(module)}) has no function "
                             f"{ref.function!r}", str(ref), allowed)
    wrong = _signature_problem(fn, params)
    if wrong:
        return None, Problem(field, f"{ref} {wrong}", str(ref), allowed)
    return fn, None


def _signature(field: str) -> str:
    return f"{field.split('.')[-1] if field != 'trainable' else 'fit'}(" \
           f"{', '.join(SIGNATURES[field][0])})"


def _signature_problem(fn: Callable, params: Sequence[str]) -> str | None:
    """Whether ``fn`` can be called with ``params`` as positional arguments."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return None
    try:
        signature.bind(*params)
    except TypeError:
        return f"has the signature {signature}, but hpo calls it with ({', '.join(params)})"
    return None


def _places(folder: str | os.PathLike[str] | None) -> str:
    first = f"{Path(folder).resolve()}, " if folder is not None else ""
    return f"{first}the working directory and the installed packages"


def _last_line(exc: BaseException) -> str:
    line = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return line[:300]


def _file(module: Any) -> str:
    return getattr(module, "__file__", None) or "built in"
