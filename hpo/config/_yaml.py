"""Read a study file's YAML within limits: its size, and the values its aliases expand to.

A YAML alias names a node written once; PyYAML builds one shared Python object for it, so a
300-byte file of anchors nine levels deep ("billion laughs") loads at once but is a value of
10^9 items to anything that walks or prints it. The parser's events are counted before a single
Python object is built, every alias as the values of its anchor, and the count stops at the
first list or mapping past the limit (so the check costs no more than the limit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpo.errors import Problem, SpecError

__all__ = ["MAX_FILE_BYTES", "MAX_VALUES", "read_yaml"]

#: A study file is a page or two; past this it is not one (and PyYAML needs ~100x its size).
MAX_FILE_BYTES = 2**20
#: Values (scalars, lists, mappings) the file may expand to, each alias counted once per use.
MAX_VALUES = 100_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: 10x faster


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The file's YAML as plain data; a SpecError naming the file (and, for an alias that
    expands too far, the field) when it cannot be read or breaks a limit."""
    source = str(path)
    text = _read_text(Path(path), source)
    loader = _Loader(text)
    try:
        _check_expansion(text, source)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([Problem(where, f"not valid YAML: {reason}", has_given=False)],
                        source) from None
    except RecursionError:  # [[[[... thousands deep: PyYAML's composer recurses per level
        raise SpecError([Problem("(file)", "values nested too deeply to be a study file",
                                 has_given=False)], source) from None
    finally:
        loader.dispose()


def _read_text(path: Path, source: str) -> str:
    """At most MAX_FILE_BYTES + 1 bytes are read: a FIFO or /dev/zero ends too."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([Problem("(file)", "no such file", source, has_given=False)],
                        source) from None
    except OSError as exc:
        raise SpecError([Problem("(file)", f"cannot read: {exc.strerror}", has_given=False)],
                        source) from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError([Problem("(file)", f"larger than {MAX_FILE_BYTES // 2**20} MiB, the "
                                 "most a study file may hold; keep data in data.path, not in "
                                 "the study file", has_given=False)], source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError([Problem("(file)", f"not UTF-8 text ({exc.reason} at byte "
                                 f"{exc.start})", has_given=False)], source) from None


@dataclass
class _Frame:
    """An open list or mapping while the events stream by: its values so far, and where in it
    the next value goes."""

    anchor: str | None
    is_map: bool
    size: int = 1
    index: int = 0  # the next item's (a list's), or pair's (a mapping's)
    key: str = "?"  # a mapping's current key
    step: str = ""  # the path step of the child being read, e.g. ".hidden", "[2]"

    def enter(self) -> None:
        self.step = (f"[{self.index}]" if not self.is_map
                     else "" if self.index % 2 == 0 else f".{self.key[:40]}")

    def leave(self, value: yaml.Event) -> None:
        if self.is_map and self.index % 2 == 0:
            self.key = value.value if isinstance(value, yaml.ScalarEvent) else "?"
        self.index += 1


def _check_expansion(text: str, source: str) -> None:
    """A SpecError naming the first list or mapping whose values, aliases expanded, pass
    MAX_VALUES. One pass over the parser's events, stopped as soon as one does, so neither the
    measuring nor the refusal costs more than the limit."""
    loader, stack, anchors = _Loader(text), list[_Frame](), dict[str, int]()
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                if stack:
                    stack[-1].enter()
                stack.append(_Frame(event.anchor, isinstance(event, yaml.MappingStartEvent)))
            elif isinstance(event, yaml.CollectionEndEvent):
                done = stack.pop()
                _add(stack, done.size, done.anchor, anchors, event)
            elif isinstance(event, yaml.ScalarEvent):
                _add(stack, 1, event.anchor, anchors, event)
            elif isinstance(event, yaml.AliasEvent):  # an open anchor (a cycle) is unbounded
                _add(stack, anchors.get(event.anchor, MAX_VALUES + 1), None, anchors, event)
            if stack and stack[-1].size > MAX_VALUES:
                raise _too_large(stack, source)
    finally:
        loader.dispose()


def _add(stack: list[_Frame], size: int, anchor: str | None, anchors: dict[str, int],
         event: yaml.Event) -> None:
    if anchor is not None:
        anchors[anchor] = size
    if stack:
        stack[-1].size += size
        stack[-1].leave(event)


def _too_large(stack: list[_Frame], source: str) -> SpecError:
    path = "".join(frame.step for frame in stack[:-1]).lstrip(".")
    return SpecError([Problem(
        path or "(top level)", f"expands to more than {MAX_VALUES:,} values, the most a study "
        f"file may hold (each use of a YAML alias, *name, counts its anchor's values again)",
        has_given=False)], source)
