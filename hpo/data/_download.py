"""Fetch a source's standard files once into a folder, each verified by its checksum.

Only the standard library is imported at module level (``urllib`` lazily, where used):
``hpo.data.config`` reads ``REMOTES`` and ``checksum_problem`` to check ``data.url`` and
``data.checksums``, and ``hpo validate`` must stay fast.

A file is written under a temporary name, hashed while it streams, and renamed into place only
when its checksum matches, so the folder never holds a partial or unverified file under the real
name. A file already in the folder is not fetched again: the folder is the cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from hpo.errors import DataError

__all__ = ["REMOTES", "Remote", "checksum_problem", "default_folder", "fetch", "parse_checksum"]

#: Seconds without data before a download gives up.
TIMEOUT_S = 60
_BLOCK = 1 << 20
_ALGORITHMS = {32: "md5", 64: "sha256"}  # hex digest length -> algorithm


@dataclass(frozen=True)
class Remote:
    """Where a source's standard files live and the official checksum of each."""

    url: str  # the folder URL holding the files (ends with "/")
    files: dict[str, str]  # file name -> "algorithm:hexdigest"


# The official files and their published MD5 sums (the ones torchvision verifies).
REMOTES: dict[str, Remote] = {
    "mnist": Remote(
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        files={
            "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": Remote(
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        files={
            "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": Remote(
        url="https://www.cs.toronto.edu/~kriz/",
        files={"cifar-10-python.tar.gz": "md5:c58f30108f718f92721af3b95e74349a"},
    ),
}


def default_folder(source: str) -> Path:
    """Where downloads go when ``data.path`` is not set: ``$XDG_CACHE_HOME/hpo/<source>``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hpo" / source


_LINE = re.compile(r"^\s*(?P<hex>[0-9a-fA-F]+)\s+\*?(?P<name>\S+)\s*$")


def parse_checksum(line: str) -> tuple[str, str, str]:
    """``"<hex>  <file>"`` (what ``md5sum`` / ``sha256sum`` print) -> (file, algorithm, hex).

    Raises ValueError saying what is wrong.
    """
    match = _LINE.match(line)
    if not match:
        raise ValueError("expected '<hex digest>  <file name>', as md5sum or sha256sum print it")
    digest = match["hex"].lower()
    if len(digest) not in _ALGORITHMS:
        raise ValueError(f"a digest of {len(digest)} hex digits is neither md5 (32) nor "
                         f"sha256 (64)")
    return match["name"], _ALGORITHMS[len(digest)], digest


def checksum_problem(line: str, source: str) -> str | None:
    """Why ``line`` is not a valid ``data.checksums`` entry for ``source``; None if it is."""
    try:
        name, _, _ = parse_checksum(line)
    except ValueError as exc:
        return str(exc)
    if source in REMOTES and name not in REMOTES[source].files:
        return f"{name!r} is not one of {source}'s files ({', '.join(REMOTES[source].files)})"
    return None


def fetch(
    source: str,
    folder: Path,
    names: list[str],
    *,
    url: str | None = None,
    checksums: tuple[str, ...] = (),
) -> list[Path]:
    """Download each of ``names`` (files of ``source``) missing from ``folder``; returns paths.

    ``url`` replaces the official folder URL; ``checksums`` lines replace the official
    checksum of the files they name. Any failure is a DataError naming the URL.
    """
    remote = REMOTES[source]
    expected = {name: tuple(spec.split(":", 1)) for name, spec in remote.files.items()}
    for line in checksums:
        name, algorithm, digest = parse_checksum(line)
        expected[name] = (algorithm, digest)
    base = url or remote.url
    base = base if base.endswith("/") else base + "/"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        target = folder / name
        if not target.exists():
            algorithm, digest = expected[name]
            _download(base + name, target, algorithm, digest)
        paths.append(target)
    return paths


def _download(url: str, target: Path, algorithm: str, digest: str) -> None:
    import urllib.error
    import urllib.request

    print(f"hpo: downloading {url} -> {target}", file=sys.stderr)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    hasher = hashlib.new(algorithm)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "hpo"})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, \
                partial.open("wb") as out:
            for block in iter(lambda: response.read(_BLOCK), b""):
                hasher.update(block)
                out.write(block)
        got = hasher.hexdigest()
        if got != digest:
            raise DataError(f"{url}: {algorithm} checksum mismatch: expected {digest}, got "
                            f"{got}; the file was not kept. If this mirror serves other files "
                            f"on purpose, list their checksums in data.checksums "
                            f"('<hex>  {target.name}')")
        os.replace(partial, target)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: download failed: HTTP {exc.code} {exc.reason}; check data.url "
                        f"(the folder holding {target.name})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"{url}: download failed: {reason}; check data.url and the network, "
                        f"or put {target.name} into {target.parent} yourself") from None
    finally:  # whatever stopped it (an error, Ctrl-C), no partial file stays behind
        partial.unlink(missing_ok=True)
