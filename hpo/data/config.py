"""The study file's ``data:`` section: where the examples come from, how they are split and
preprocessed. Torch-free, so ``hpo validate`` stays fast.

The names a field accepts are the data package's own: ``data.source`` is a key of
``hpo.data.dataset.SOURCES`` (one loader each) and ``data.preprocess`` lists keys of ``STEPS``.
``data.source: python`` calls the user's ``data.loader`` ("module:function") with
``data.options``; whether that function can be imported is ``hpo.usercode``'s to check.
Each field carries its rule (``models.fields.rule``); ``hpo.config`` parses the section by
them and adds ``data_problems``, the rules between the section's fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpo.data._download import REMOTES, checksum_problem
from hpo.data.dataset import SOURCES, STEPS
from hpo.errors import Problem
from models.fields import Flag, Invalid, ListOf, Number, OneOf, Rule, Text, rule

__all__ = ["DataSpec", "FLATTENING", "Options", "data_problems"]

#: Preprocessing steps whose output is flat features (N, K), whatever went in.
FLATTENING = ("pca", "whiten")
#: Sources that read no files: no data.path for them.
_NO_FILES = ("digits", "python")
_LOADER_FORM = '"module:function" with load(config) -> a dict of arrays or of torch Datasets'


@dataclass(frozen=True)
class Options(Rule):
    """A mapping with string keys and any values YAML gives; typed, a plain dict."""

    allowed: str = "a mapping of names to values"

    def parse(self, value: Any) -> Any:
        self.check(value)
        return dict(value)

    def check(self, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Invalid("wrong type", self.allowed)
        if not all(isinstance(k, str) for k in value):
            raise Invalid("keys must be names (strings)", self.allowed)


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    source: str = rule(OneOf(tuple(SOURCES)), "digits")  # where the examples come from
    path: str | None = rule(Text(path=True), None)  # file or folder for file-based sources
    # mnist | fashion_mnist | cifar10: fetch the standard files missing from data.path (default
    # ~/.cache/hpo/<source>), each verified by its checksum; files already there are reused.
    download: bool = rule(Flag(), False)
    url: str | None = rule(Text(), None)  # folder URL holding the files; default: official mirror
    # '<md5 or sha256 hex>  <file>' lines, as md5sum/sha256sum print them; they replace the
    # official checksums of the files they name (needed when a mirror serves other files).
    checksums: tuple[str, ...] = rule(ListOf(Text(optional=False), empty=True), ())
    target: str | None = rule(Text(), None)  # csv only: the label column (default "target")
    # python only: "module:function", looked up next to the study file, then in the working
    # directory, then among the installed packages; called as load({"seed": seed, **options}).
    loader: str | None = rule(Text(), None)
    options: dict[str, Any] = rule(Options(), factory=dict)  # python only: the loader's config
    val_fraction: float = rule(Number(0, 1, low_open=True, high_open=True), 0.2)  # stratified
    test_fraction: float = rule(Number(0, 1, high_open=True), 0.0)  # final evaluation only
    # Applied in order; statistics come from the training split only.
    preprocess: tuple[str, ...] = rule(ListOf(OneOf(tuple(STEPS)), empty=True), ("zero_center",))


def data_problems(d: DataSpec) -> list[Problem]:
    """The rules between the data section's fields, for fields that each follow their own."""
    return _source_problems(d) + _split_problems(d)


def _source_problems(d: DataSpec) -> list[Problem]:
    """Where the examples come from: a path, a download with its URL and checksums, or the
    user's loader."""
    problems = _loader_problems(d)
    fetchable = d.source in REMOTES
    if d.source not in _NO_FILES and d.path is None and not (d.download and fetchable):
        problems.append(Problem("data.path", f"source {d.source!r} reads files: a path is needed",
                                None, "an existing file or folder"
                                + (", or data.download: true" if fetchable else "")))
    if d.download and not fetchable:
        problems.append(Problem("data.download", f"source {d.source!r} cannot be downloaded",
                                True, f"false, or a source among {' | '.join(REMOTES)}"))
    for key in ("url", "checksums"):
        value = getattr(d, key)
        if value and not d.download:
            problems.append(Problem(f"data.{key}", "used only when downloading",
                                    list(value) if isinstance(value, tuple) else value,
                                    "null / [], or data.download: true"))
    if d.url is not None and not d.url.startswith(("http://", "https://", "file://")):
        problems.append(Problem("data.url", "not a URL", d.url,
                                "http://, https:// or file:// and the folder holding the files"))
    for i, line in enumerate(d.checksums if fetchable else ()):
        why = checksum_problem(line, d.source)
        if why:
            problems.append(Problem(f"data.checksums[{i}]", why, line,
                                    "'<md5 or sha256 hex>  <file>' for "
                                    + ", ".join(REMOTES[d.source].files)))
    if d.target is not None and d.source != "csv":
        problems.append(Problem("data.target", "only the csv source has a target column",
                                d.target, "null unless data.source is csv"))
    return problems


def _loader_problems(d: DataSpec) -> list[Problem]:
    """``loader`` is needed by the python source and used by nothing else; so are ``options``;
    the python source reads no ``path`` (the loader finds its own files)."""
    problems = []
    if d.source == "python" and d.loader is None:
        problems.append(Problem("data.loader", "source 'python' calls your function: a loader "
                                "is needed", None, _LOADER_FORM))
    if d.source != "python":
        if d.loader is not None:
            problems.append(Problem("data.loader", f"used only with data.source: python, not "
                                    f"{d.source!r}", d.loader, "null, or data.source: python"))
        if d.options:
            problems.append(Problem("data.options", "passed only to a data.loader (data.source: "
                                    "python)", d.options, "{}, or data.source: python"))
    elif d.path is not None:
        problems.append(Problem("data.path", "source 'python' reads no path: your loader finds "
                                "its own files", d.path, "null; pass the path to the loader in "
                                "data.options"))
    return problems


def _split_problems(d: DataSpec) -> list[Problem]:
    """The split fractions, and the order of the preprocessing steps."""
    problems = []
    if d.val_fraction + d.test_fraction >= 1:
        problems.append(Problem("data.test_fraction", "val_fraction + test_fraction must be < 1",
                                d.test_fraction, f"< {1 - d.val_fraction:g}"))
    # Shapes: pca/whiten leave flat (N, K) features and csv has only flat ones, while
    # per_channel_mean needs images (N, C, H, W).
    flattening = [s for s in d.preprocess if s in FLATTENING]
    if "per_channel_mean" in d.preprocess and (
            d.source == "csv" or (flattening and d.preprocess.index(flattening[0])
                                  < d.preprocess.index("per_channel_mean"))):
        problems.append(Problem("data.preprocess", "per_channel_mean needs images (N, C, H, W), "
                                "but " + ("csv features are flat" if d.source == "csv" else
                                          f"{flattening[0]} flattens them before it"),
                                list(d.preprocess), "per_channel_mean before pca/whiten; "
                                "zero_center for flat features"))
    return problems
