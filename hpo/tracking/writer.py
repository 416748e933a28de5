"""Writer threads: the store's writes in order, off the thread that produces them.

``Writer`` is one thread. ``Writers`` is several behind the same interface: the writes of one
key (a trial) run on one of them, in order, and those of different keys at once.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["WRITE_BACKLOG", "Writer", "Writers"]

#: Writes that may wait for a writer thread before the caller waits too.
WRITE_BACKLOG = 256


class _Failure:
    """The first write that failed, of the writer threads that share this."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def set(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc


class Writer:
    """Runs ``write(fn, ...)`` calls on one background thread, in the order they were made.

    At most WRITE_BACKLOG writes wait; past that the caller waits too, so events that come
    faster than the store takes them slow down to its pace instead of piling up in memory.
    A write that failed is raised at the next ``write`` (and by ``drain``); the writes queued
    after it are dropped, so a journal never holds a trial's end without its start. Writers
    that share a ``failure`` (``Writers``' threads) stop together: each raises and drops as
    though the first failure of any of them were its own.

    ``idle``, if given, runs on the writer thread whenever it has caught up (no write waits)
    and every ``idle_s`` seconds while none comes: a batching writer's moment to write what it
    holds (a group commit: the writes that came while it was busy go out together) and its
    timer (what waits goes out though nothing new comes).
    """

    def __init__(self, name: str = "hpo-tracking", *, idle: Callable[[], Any] | None = None,
                 idle_s: float = 0.25, failure: _Failure | None = None) -> None:
        self.name = name
        self._idle, self._idle_s = idle, idle_s
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._failure = failure or _Failure()

    @property
    def error(self) -> BaseException | None:
        """The write that failed, if one did (on any thread sharing this one's failure)."""
        return self._failure.error

    def write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` on the writer thread, after every write queued before it."""
        if self.error is not None:
            raise self.error
        if self._thread is None:
            self._queue = queue.Queue(maxsize=WRITE_BACKLOG)
            self._thread = threading.Thread(target=self._writes, name=self.name, daemon=True)
            self._thread.start()
        self._queue.put((fn, args, kwargs))

    def _writes(self) -> None:
        caught_up = False
        while True:
            if self._idle is None:
                item = self._queue.get()
            else:
                try:
                    item = (self._queue.get(timeout=self._idle_s) if caught_up
                            else self._queue.get_nowait())
                except queue.Empty:
                    self._run(self._idle, (), {})
                    caught_up = True
                    continue
                caught_up = False
            if item is None:
                return
            self._run(*item)

    def _run(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> None:
        if self.error is None:
            try:
                fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the producing thread
                self._failure.set(exc)

    def drain(self) -> None:
        """Wait for every queued write; one that failed is raised here."""
        self.join()
        if self.error is not None:
            raise self.error

    def join(self) -> None:
        """Wait for every queued write (the thread ends; the next ``write`` starts another)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class Writers:
    """``Writer``'s interface over ``count`` threads: the writes of one key (a trial's) run on
    one thread in the order they were made, those of different keys at once.

    A key gets its thread with its first write, the next in turn (round-robin: trials start
    one after another, so each thread gets every ``count``-th), and keeps it; ``moved`` hands
    it to a new key. The first write that fails on any thread is ``error``: every thread drops
    the writes queued after it, as one ``Writer`` does, and ``drain`` waits for all of them
    before it raises it. Keys and ``on`` are the producing thread's.
    """

    def __init__(self, count: int, name: str = "hpo-tracking") -> None:
        self._failure = _Failure()
        self.threads = [Writer(f"{name}-{i}", failure=self._failure) for i in range(count)]
        self._turn = itertools.cycle(self.threads)
        self._of: dict[Hashable, Writer] = {}  # key -> its thread

    @property
    def error(self) -> BaseException | None:
        """The first write that failed, on any thread."""
        return self._failure.error

    def on(self, key: Hashable) -> Writer:
        """The thread of ``key``'s writes."""
        thread = self._of.get(key)
        if thread is None:
            thread = self._of[key] = next(self._turn)
        return thread

    def moved(self, old: Hashable, new: Hashable) -> None:
        """``new`` is ``old`` from now on: its writes queue behind ``old``'s, on its thread."""
        thread = self.on(old)
        del self._of[old]
        self._of[new] = thread

    def write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """A write of no key: on the thread of the key None."""
        self.on(None).write(fn, *args, **kwargs)

    def drain(self) -> None:
        """Wait for every thread's queued writes; the first that failed is raised here."""
        for thread in self.threads:
            thread.join()
        if self.error is not None:
            raise self.error
