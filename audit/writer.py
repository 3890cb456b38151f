"""Audit entries committed by a thread of their own, for callers that must not wait for one.

The DICOM listener's entry for an accepted association cost every association its thread's
database connection and the chain's locked append (about 1.5 ms, and on PostgreSQL a new
connection) before the peer got its answer. :func:`record_later` hands the entry to this
process's writer thread, which appends it with the one audit call (:func:`audit.trail.record`,
so the chain and its lock are as for any entry) while the association goes on; the caller
keeps the :class:`Pending` entry and waits for it (:meth:`Pending.wait`) before anything
that must come after the entry on the trail. The writer commits entries in the order they
were handed over, one append each.

Nothing is dropped silently: an entry that cannot be written (the database down) is tried
once more on a fresh connection, then given back to its caller as failed
(:attr:`Pending.error`), which decides what to do (the listener refuses the association's
operations and tries the entry again when the association ends). :func:`flush` waits for
everything handed over so far; it runs at interpreter exit and when the listener stops.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections, connection

from .models import AuditEvent
from .trail import record

log = logging.getLogger(__name__)

#: Seconds :func:`flush` waits at interpreter exit.
EXIT_FLUSH_WAIT = 10.0


@dataclass
class Pending:
    """An entry handed to the writer, and what became of it."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    events: list[AuditEvent] = field(default_factory=list)
    error: BaseException | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """True once the entry is committed; False when it failed or ``timeout`` passed."""
        return self.done.wait(timeout) and self.error is None

    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self) -> None:
        """Append the entry here and now, once (the writer does; so does a caller retrying
        one that failed)."""
        with self.lock:
            if not self.events:
                self.events = record(*self.args, **self.kwargs)
            self.error = None


class _Writer:
    def __init__(self) -> None:
        self.queue: queue.Queue[Pending] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def submit(self, pending: Pending) -> Pending:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="audit-writer",
                                               daemon=True)
                self.thread.start()
        self.queue.put(pending)
        return pending

    def _run(self) -> None:
        while True:
            pending = self.queue.get()
            try:
                if pending.args:  # else a flush's marker
                    _write(pending)
            finally:
                pending.done.set()
                self.queue.task_done()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written (or failed): a marker behind
        it all, which the thread passes once it has written what came before."""
        if self.thread is None or self.queue.unfinished_tasks == 0:
            return True
        return self.submit(Pending((), {})).done.wait(timeout)


def _write(pending: Pending) -> None:
    for attempt in (1, 2):
        try:
            close_old_connections()  # a connection broken since the last entry is replaced
            pending.write()
            return
        except Exception as exc:
            pending.error = exc
            connection.close()  # the next attempt, or the next entry, starts afresh
            if attempt == 2:
                log.exception("cannot write an audit entry (%s, %s)", pending.args[:1],
                              pending.kwargs.get("detail"))


_writer = _Writer()


def record_later(*args: Any, **kwargs: Any) -> Pending:
    """:func:`audit.trail.record` (same arguments), by this process's writer thread."""
    return _writer.submit(Pending(args, kwargs))


def flush(timeout: float | None = None) -> bool:
    """Wait for every entry handed over so far; True when none is left waiting."""
    return _writer.flush(timeout)


def _after_fork() -> None:
    """A forked child has no writer thread and none of its parent's entries (the parent
    writes its own): it starts afresh."""
    global _writer
    _writer = _Writer()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(lambda: flush(EXIT_FLUSH_WAIT))
