"""A writer thread: the store's writes in order, off the thread that produces them."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["WRITE_BACKLOG", "Writer"]

#: Writes that may wait for the writer thread before the caller waits too.
WRITE_BACKLOG = 256


class Writer:
    """Runs ``write(fn, ...)`` calls on one background thread, in the order they were made.

    At most WRITE_BACKLOG writes wait; past that the caller waits too, so events that come
    faster than the store takes them slow down to its pace instead of piling up in memory.
    A write that failed is raised at the next ``write`` (and by ``drain``); the writes queued
    after it are dropped, so a journal never holds a trial's end without its start.

    ``idle``, if given, runs on the writer thread whenever it has caught up (no write waits)
    and every ``idle_s`` seconds while none comes: a batching writer's moment to write what it
    holds (a group commit: the writes that came while it was busy go out together) and its
    timer (what waits goes out though nothing new comes).
    """

    def __init__(self, name: str = "hpo-tracking", *, idle: Callable[[], Any] | None = None,
                 idle_s: float = 0.25) -> None:
        self.name = name
        self._idle, self._idle_s = idle, idle_s
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._error: BaseException | None = None

    @property
    def error(self) -> BaseException | None:
        """The write that failed, if one did."""
        return self._error

    def write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` on the writer thread, after every write queued before it."""
        if self._error is not None:
            raise self._error
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
        if self._error is None:
            try:
                fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the producing thread
                self._error = exc

    def drain(self) -> None:
        """Wait for every queued write; one that failed is raised here."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
