"""Queueing the replica's tasks from a thread of the process, off the storer's clock.

A C-STORE or STOW-RS caller waits for ingest; with a replica configured, ingest's commit
used to wait for the broker too (a ``replicate_copy`` per object, the priors' recall
task, and the priors' cache lookup): about 2 ms an object, the most of what replication
cost ingest. The sends are made here instead, in order, by one daemon thread per process.

Nothing is lost if the process dies with sends still queued: the copy rows were committed
with the instances, and ``drain_backlog`` (beat, ``REPLICA_DRAIN_INTERVAL_SECONDS``)
dispatches every pending row no worker holds; a task sent twice is harmless (``replicate_copy``
claims its row with a conditional update). With tasks run eagerly (``TASKS_IN_PROCESS``)
the sends run at once, in the caller, as before: there is no broker to wait for, and the
tests that read the replica right after an ingest stay deterministic.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings

from portal.celery import app

log = logging.getLogger(__name__)

#: How long the interpreter's exit waits for the sends still queued (the rest are taken by
#: the backlog drain).
EXIT_WAIT_SECONDS = 5.0


ManySend = Callable[[list[int]], Any]


class _Many:
    """A gathering of sends whose ids are merged (see ``submit_many``): queued once, when
    its first ids come, and filled by the callers while the thread lingers on it."""

    def __init__(self) -> None:
        self.ids: dict[ManySend, list[int]] = {}
        self.closed = threading.Event()  # no more ids: send it now

    def size(self) -> int:
        return max((len(ids) for ids in self.ids.values()), default=0)


Send = tuple["Callable[..., Any] | _Many", tuple[Any, ...]]


class Dispatcher:
    """A FIFO of sends and the daemon thread that makes them. Started on first use in each
    process (a forked worker gets a thread of its own, not its parent's dead one).

    A Celery send costs about 0.6 ms of CPU in this process whether or not it waits for
    the broker, so the ids of :meth:`submit_many` are coalesced: those arriving within
    ``REPLICA_DISPATCH_LINGER_SECONDS`` of each other go in one send of at most
    ``REPLICA_DISPATCH_BATCH`` ids. The callers add their ids to the open gathering
    themselves and wake the thread only to open one: a thread woken by every stored object
    took the interpreter lock from the listener's threads each time, which cost a C-STORE
    association a fifth of its rate (bench/dimse.py --replica).
    """

    def __init__(self) -> None:
        self._sends: queue.Queue[Send] = queue.Queue()
        self._lock = threading.Lock()
        self._open: _Many | None = None  # the gathering the next ids join, already queued
        self._pid: int | None = None

    def submit(self, send: Callable[..., Any], *args: Any) -> None:
        if app.conf.task_always_eager:
            send(*args)
            return
        self._ensure_thread()
        with self._lock:
            self._close_open()  # in order: what was gathered before goes first
            self._sends.put((send, args))

    def submit_many(self, send: ManySend, ids: Iterable[int]) -> None:
        """``send(ids)``, its ids merged with those of the sends around it."""
        self.submit_gathered({send: list(ids)})

    def submit_gathered(self, sends: Mapping[ManySend, Iterable[int]]) -> None:
        """:meth:`submit_many` of each of these sends, in this order, in one hand-over:
        an ingest's copies and its studies' priors join the open gathering together."""
        batches = {send: found for send, ids in sends.items() if (found := list(ids))}
        if not batches:
            return
        if app.conf.task_always_eager:
            for send, ids in batches.items():
                _make(send, (ids,))  # one failing does not stop the next
            return
        self._ensure_thread()
        with self._lock:
            gathering = self._open
            if gathering is None:
                gathering = self._open = _Many()
                self._sends.put((gathering, ()))
            for send, ids in batches.items():
                gathering.ids.setdefault(send, []).extend(ids)
            if gathering.size() >= settings.REPLICA_DISPATCH_BATCH:
                self._close_open()  # a full batch ends it; the next ids start another

    def _close_open(self) -> None:
        if self._open is not None:
            self._open.closed.set()
            self._open = None

    def prepare(self) -> None:
        """Do now, before a server takes objects, what its first send would: import the
        tasks (and boto3 with them) and build Celery's producers, about 0.15 s of CPU that
        the dispatch thread would otherwise take, under the interpreter lock, from a
        listener's first association. Safe before a fork (no connection is opened)."""
        from . import tasks  # noqa: F401

        if not app.conf.task_always_eager:
            app.finalize(auto=True)
            app.amqp.producer_pool  # noqa: B018
            with app.connection_for_write() as conn:
                conn.transport  # noqa: B018 - the broker's transport module

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every send submitted so far was made (what is being gathered is sent
        now); False on timeout."""
        if self._pid != os.getpid():
            return True
        done = threading.Event()
        with self._lock:
            self._close_open()
            self._sends.put((done.set, ()))
        return done.wait(timeout)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._sends = queue.Queue()  # a fork's copy may hold its parent's sends
            self._open = None
            threading.Thread(target=self._run, name="replica-dispatch", daemon=True).start()
            self._pid = os.getpid()

    def _run(self) -> None:
        sends = self._sends
        while True:
            send, args = sends.get()
            if not isinstance(send, _Many):
                _make(send, args)
                continue
            self._linger(send)
            batch = settings.REPLICA_DISPATCH_BATCH
            for many, ids in send.ids.items():  # closed: nobody adds to it now
                for start in range(0, len(ids), batch):
                    _make(many, (ids[start:start + batch],))

    def _linger(self, gathering: _Many) -> None:
        """Wait until no ids have joined ``gathering`` for the linger, or it is closed (a
        full batch, a send of another kind, a wait), then close it."""
        linger = settings.REPLICA_DISPATCH_LINGER_SECONDS
        seen = -1
        while linger > 0 and not gathering.closed.is_set():
            with self._lock:
                size = sum(len(ids) for ids in gathering.ids.values())
                if size == seen:
                    break
            seen = size
            gathering.closed.wait(linger)
        with self._lock:
            if self._open is gathering:
                self._close_open()
            gathering.closed.set()


def _make(send: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        send(*args)
    except Exception:  # the backlog drain takes what a broker outage left
        log.exception("replica dispatch %s failed; the backlog drain will retry",
                      getattr(send, "__name__", send))


dispatcher = Dispatcher()


@atexit.register
def _drain_at_exit() -> None:
    if not dispatcher.wait(EXIT_WAIT_SECONDS):
        log.warning("replica dispatch: sends still queued at exit; the backlog drain "
                    "will queue them")
