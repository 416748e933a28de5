"""Ctrl-C and SIGTERM stop a study, whatever it is doing, and a second Ctrl-C stops it at once.

Ray Tune's own SIGINT handler would end a round early and hand back its partial results as if
the round were done, and Ray's fatal-signal handler turns SIGTERM into an abort (exit 134): while
a study runs, both signals come here instead. Outside a round the signal raises ``Interrupted``
at once, as Python's KeyboardInterrupt does. Inside a round (``deferred``) it only marks the
study: Tune's loop is in the middle of a step, and the round's callback stops it at the start of
the next one (``RoundInterrupted``), so Tune stops its trial actors before the study cleans up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["INTERRUPTS", "Interrupted", "Interrupts", "RoundInterrupted"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the study. A KeyboardInterrupt, so that no ``except
    Exception`` on the way out swallows it; the exit code is the shell's, 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.resumable = False  # set once the study's journal holds its start

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class RoundInterrupted(Exception):
    """Raised by the round's Tune callback between steps: an Exception, so that Tune cleans up
    (stops its trial actors) before it passes it on."""


class Interrupts:
    """The process's SIGINT/SIGTERM handling while a study runs (``handling()``)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferred = False

    @property
    def pending(self) -> bool:
        return self.signum is not None

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Route both signals here for the block (main thread only: elsewhere Python cannot set
        handlers, and the caller's own handling stays)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        self.signum, self._deferred = None, False
        self.install()
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def install(self) -> None:
        """(Again) after ``ray.init``, which sets a fatal-signal handler of its own."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self._handle)

    @contextlib.contextmanager
    def deferred(self, *, check: bool = True) -> Iterator[None]:
        """Inside the block a signal only marks the study; it is raised when the block ends
        (or, without ``check``, at the caller's next ``check()``)."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
        if check:
            self.check()

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:  # the second one: the user does not want to wait
            print(f"hpo: {signal.Signals(signum).name} again: exiting now", file=sys.stderr,
                  flush=True)
            os._exit(128 + signum)
        self.signum = signum
        if not self._deferred:
            raise Interrupted(signum)


#: One per process, as signal handlers are.
INTERRUPTS = Interrupts()
