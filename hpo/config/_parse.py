"""Parse one section of a study file by its fields' rules, collecting every problem.

Each parser appends what is wrong to ``problems`` and goes on, so that ``parse_spec`` reports
every problem of a file in one pass; a field with a problem keeps its default.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from hpo.config.rules import Invalid, Number, Rule, field_rule, is_number
from hpo.config.sections import NOT_SEARCHABLE, SEARCHABLE
from hpo.errors import Problem
from hpo.space.distributions import Categorical, Numeric, is_distribution_form, parse_distribution
from models.config import ModelConfig
from models.fields import number_text_hint

__all__ = ["bounds", "builder_section", "free_section", "parse_field", "plain_section",
           "searchable_section", "unknown_key"]


def parse_field(
    body: dict, key: str, r: Rule, default: Any, path: str, problems: list[Problem]
) -> Any:
    """``body[key]`` parsed by ``r``; ``default`` when it is absent or breaks the rule."""
    if key not in body:
        return default
    try:
        return r.parse(body[key])
    except Invalid as exc:
        problems.append(Problem(path, str(exc), body[key], exc.allowed))
        return default


def unknown_key(path: str, key: Any, known: list[str]) -> Problem:
    """``path: unknown key; did you mean batchnorm? (allowed: ...)``, the suggestion only for a
    known key close enough to be a typo."""
    return Problem(path, "unknown key" + _did_you_mean(key, known), has_given=False,
                   allowed=", ".join(known))


def _did_you_mean(key: Any, known: list[str]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def _unknown_keys(body: dict, section: str, known: list[str], problems: list[Problem]) -> None:
    for key in body:
        if key not in known:
            problems.append(unknown_key(f"{section}.{key}", key, known))


def plain_section(body: dict, section: str, cls: type, problems: list[Problem],
                  bounds_extra: tuple[str, ...] = ()) -> Any:
    """A section of fixed values: an instance of ``cls``, whose fields carry their rules."""
    fields = dataclasses.fields(cls)
    _unknown_keys(body, section, [f.name for f in fields], problems)
    values: dict[str, Any] = {}
    for f in fields:
        path = f"{section}.{f.name}"
        if f.name in body and is_distribution_form(body[f.name]):
            problems.append(Problem(path, "a search distribution is allowed only under model: "
                                    "and train:", body[f.name], field_rule(f).allowed or None))
            continue
        if f.name == "bounds" and section == "search":
            values["bounds"] = bounds(body.get("bounds", {}), problems, bounds_extra)
            continue
        if f.name in body:
            values[f.name] = parse_field(body, f.name, field_rule(f), None, path, problems)
    return cls(**{k: v for k, v in values.items() if v is not None or k in body})


def bounds(raw: Any, problems: list[Problem], extra: tuple[str, ...] = ()
           ) -> dict[str, tuple[float, float]]:
    """``search.bounds``: a numeric searchable field (or one of the user's own, ``extra``) ->
    (lo, hi)."""
    allowed = "a mapping from a numeric model/train field to [lo, hi] with lo < hi"
    if not isinstance(raw, dict):
        problems.append(Problem("search.bounds", "wrong type", raw, allowed))
        return {}
    out = {}
    numeric = [k for k, (_, r) in SEARCHABLE.items() if isinstance(r, Number)] + list(extra)
    for key, value in raw.items():
        path = f"search.bounds.{key}"
        if key not in numeric:
            problems.append(Problem(path, "not a numeric model/train field"
                                    + _did_you_mean(key, numeric), has_given=False,
                                    allowed=", ".join(numeric)))
        elif (not isinstance(value, list) or len(value) != 2
              or not all(is_number(v) for v in value) or not value[0] < value[1]):
            hints = [number_text_hint(v) for v in value] if isinstance(value, list) else []
            fix = "; ".join(h for h in hints if h)
            problems.append(Problem(path, "bounds must be [lo, hi] with lo < hi"
                                    + (f": {fix}" if fix else ""), value, allowed))
        else:
            out[key] = (float(value[0]), float(value[1]))
    return out


def searchable_section(
    body: dict, section: str, cls: type, problems: list[Problem]
) -> dict[str, Any]:
    """A model or train section: every field of ``cls``, a value or a search distribution."""
    fields = dataclasses.fields(cls)
    defaults = {f.name: f.default for f in fields}
    _unknown_keys(body, section, list(defaults), problems)
    values: dict[str, Any] = dict(defaults)
    for f in fields:
        if f.name in body:
            values.update(_searchable_value(body, f.name, field_rule(f), f"{section}.{f.name}",
                                            defaults[f.name], problems))
    return values


def _searchable_value(body: dict, key: str, r: Rule, path: str, default: Any,
                      problems: list[Problem]) -> dict[str, Any]:
    """``{key: value or distribution}`` for ``body[key]`` under rule ``r``; ``{}`` for a
    distribution with a problem (the field keeps its default)."""
    raw = body[key]
    if is_distribution_form(raw):
        dist = _distribution(raw, key, r, path, problems)
        return {key: dist} if dist is not None else {}
    if isinstance(raw, dict):
        problems.append(Problem(path, "a mapping must be one search distribution", raw, _FORMS))
        return {key: default}
    return {key: parse_field(body, key, r, default, path, problems)}


def builder_section(body: dict, problems: list[Problem]) -> dict[str, Any]:
    """A model section with ``builder``: the user's network. The factory's own fields keep
    their rules where given (a builder may use ``models.activation(...)`` and friends); any
    other key is the builder's own. Nothing is filled in: the builder gets what is written."""
    rules = {f.name: field_rule(f) for f in dataclasses.fields(ModelConfig)}
    own = {k: v for k, v in body.items() if k not in rules and k != "builder"}
    values: dict[str, Any] = {"builder": body["builder"]}
    for key, r in rules.items():
        if key in body:
            values.update(_searchable_value(body, key, r, f"model.{key}", None, problems))
    values.update(free_section(own, "model", problems))
    return values


def free_section(body: dict, section: str, problems: list[Problem]) -> dict[str, Any]:
    """A section of the user's own keys (a trainable's ``model:`` and ``train:``, a builder's
    extra keys): each a fixed value or a search distribution, whatever its name."""
    values: dict[str, Any] = {}
    for key, raw in body.items():
        path = f"{section}.{key}"
        if not isinstance(key, str) or not key.isidentifier():
            problems.append(Problem(path, "a key must be a name (letters, digits, _)",
                                    has_given=False, allowed="a Python identifier"))
        elif is_distribution_form(raw):
            try:
                values[key] = parse_distribution(raw)
            except ValueError as exc:
                kind = next(iter(raw))
                problems.append(Problem(path, f"invalid {kind}: {exc}", raw, _DIST_HELP[kind]))
        elif isinstance(raw, dict):
            problems.append(Problem(path, "a mapping must be one search distribution", raw,
                                    _FORMS))
        else:
            values[key] = tuple(raw) if isinstance(raw, list) else raw
    return values


def _distribution(raw: dict, key: str, r: Rule, path: str, problems: list[Problem]) -> Any:
    kind = next(iter(raw))
    if key in NOT_SEARCHABLE:
        problems.append(Problem(path, "this field cannot be searched", raw, r.allowed))
        return None
    if kind != "choice" and (not isinstance(r, Number) or r.optional):
        problems.append(Problem(path, f"`{kind}` needs a numeric field; use `choice`", raw,
                                r.allowed))
        return None
    try:
        dist = parse_distribution(raw)
    except ValueError as exc:
        problems.append(Problem(path, f"invalid {kind}: {exc}", raw, _DIST_HELP[kind]))
        return None
    if isinstance(dist, Categorical):
        for i, choice in enumerate(dist.choices):
            value = list(choice) if isinstance(choice, tuple) else choice
            try:
                r.parse(value)
            except Invalid as exc:
                problems.append(Problem(f"{path}.choice[{i}]", str(exc), value, exc.allowed))
        return dist
    assert isinstance(dist, Numeric) and isinstance(r, Number)  # the kind != "choice" test above
    if r.integer != dist.integer:
        want = "int or logint" if r.integer else "uniform or loguniform"
        problems.append(Problem(path, f"`{kind}` does not fit this field", raw,
                                f"{want} ({r.allowed})"))
        return None
    for end in (dist.low, dist.high):
        if not r.contains(end):
            problems.append(Problem(path, "range outside the field's limits", raw, r.allowed))
            break
    return dist


_FORMS = ("a fixed value, or one of {choice: [...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]},"
          " {int: [lo, hi]}, {logint: [lo, hi]}")
_DIST_HELP = {
    "choice": "{choice: [a, b, ...]} with distinct values",
    "uniform": "{uniform: [lo, hi]} with lo < hi",
    "loguniform": "{loguniform: [lo, hi]} with 0 < lo < hi",
    "int": "{int: [lo, hi]} whole numbers, lo < hi, inclusive",
    "logint": "{logint: [lo, hi]} whole numbers, 0 < lo < hi, inclusive",
}
