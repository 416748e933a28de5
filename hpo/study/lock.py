"""One ``hpo search`` of a study at a time: an exclusive lock on its folder.

Two drivers of one study write one journal, one Ray state and one MLflow study run, and mix and
lose each other's trials. The lock is ``fcntl.flock`` on ``<study folder>/.lock``, which holds
the holder's pid for the message the next one gets. The kernel releases a flock when its
process ends, however it ends (SIGKILL included), so the lock file a killed driver leaves is
simply taken by the next; the file itself is never removed (two processes could then each
lock a different file of one name).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from hpo.errors import InputError

__all__ = ["LOCK_FILE", "StudyLock", "private_folder"]

#: The lock's file in the study folder.
LOCK_FILE = ".lock"


def private_folder(folder: Path) -> None:
    """``folder`` and whichever of its parents are missing, made 0700: a study's journal,
    best.yaml and Ray state are its owner's alone (the files inside keep the usual modes; the
    folder keeps others out). A folder already there keeps its mode: it may be the user's."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for path in reversed(missing):  # top down
        path.mkdir(mode=0o700, exist_ok=True)  # exist_ok: another process may make it too


class StudyLock:
    """The study folder's lock, held from ``acquire`` (or ``with``) to ``release``.

    ``acquire`` never waits: a study already running is an input error (exit 2) naming the
    folder and the pid that holds it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> StudyLock:
        private_folder(self.folder)
        # Not inherited by the processes this one starts (Python's default, PEP 446): a Ray
        # worker that outlives the driver must not keep the study locked.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder else "a process that is just starting"
            raise InputError(
                f"study folder {self.folder} is in use by another `hpo search` ({who}): one "
                f"study runs once at a time. Wait for it to finish, or stop it "
                f"(`kill {holder or '<pid>'}`) and continue with --resume") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no pid of an ended process left to mislead a reader
        finally:
            os.close(fd)  # closing the file releases the lock

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
