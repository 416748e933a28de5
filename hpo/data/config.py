"""The study file's ``data:`` section: where the examples come from, how they are split and
preprocessed. Torch-free, so ``hpo validate`` stays fast.

The names a field accepts are the data package's own: ``data.source`` is a key of
``hpo.data.dataset.SOURCES`` (one loader each) and ``data.preprocess`` lists keys of ``STEPS``.
Each field carries its rule (``models.fields.rule``); ``hpo.config`` parses the section by
them and adds ``data_problems``, the rules between the section's fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpo.data._download import REMOTES, checksum_problem
from hpo.data.dataset import SOURCES, STEPS
from hpo.errors import Problem
from models.fields import Flag, ListOf, Number, OneOf, Text, rule

__all__ = ["DataSpec", "FLATTENING", "data_problems"]

#: Preprocessing steps whose output is flat features (N, K), whatever went in.
FLATTENING = ("pca", "whiten")


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
    val_fraction: float = rule(Number(0, 1, low_open=True, high_open=True), 0.2)  # stratified
    test_fraction: float = rule(Number(0, 1, high_open=True), 0.0)  # final evaluation only
    # Applied in order; statistics come from the training split only.
    preprocess: tuple[str, ...] = rule(ListOf(OneOf(tuple(STEPS)), empty=True), ("zero_center",))


def data_problems(d: DataSpec) -> list[Problem]:
    """The rules between the data section's fields, for fields that each follow their own."""
    return _source_problems(d) + _split_problems(d)


def _source_problems(d: DataSpec) -> list[Problem]:
    """Where the files come from: a path, or a download with its URL and checksums."""
    problems = []
    fetchable = d.source in REMOTES
    if d.source != "digits" and d.path is None and not (d.download and fetchable):
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
