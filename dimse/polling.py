"""Waiting for work instead of sleeping, in pynetdicom's threads.

pynetdicom runs two polling loops per association: the DUL thread checks the socket and its
queues, and the association thread checks for decoded DIMSE messages, each sleeping 1 ms
whenever a pass found nothing to do. A C-STORE waits for both: the object is complete, the
association thread wakes up to a millisecond later to handle it, and the DUL thread wakes
up to a millisecond after that to send the response. One association sending a CT series
spent a third of each object asleep (pynetdicom alone: 200 objects/s with the 1 ms sleeps,
270 without).

:func:`install` replaces only those 1 ms idle sleeps. The association thread waits on its
message queue, so it wakes the moment a message is decoded. The DUL thread, while its peer
is active (a PDU in the last :data:`BUSY_WINDOW` seconds), waits on its socket for at most
:data:`BUSY_POLL` before looking at its outgoing queue again; an idle association keeps the
1 ms sleep (polling fast all the time would cost each idle association a third of a core).
The switch is made where pynetdicom looks ``time`` up (its ``dul`` and ``association``
modules), so no pynetdicom code is copied or changed.
"""

from __future__ import annotations

import select
import threading
import time as _time
from types import ModuleType
from typing import Any

from pynetdicom import association as _association
from pynetdicom import dul as _dul
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider

IDLE_POLL = 0.001  # pynetdicom's own delay, in both loops
BUSY_POLL = 0.0002
BUSY_WINDOW = 0.05


def _busy(dul: DULServiceProvider) -> bool:
    # The DUL restarts its idle timer on every PDU received.
    started = getattr(dul._idle_timer, "_start_time", None)
    return started is not None and _time.time() - started < BUSY_WINDOW


def sleep(seconds: float) -> None:
    """``time.sleep`` for pynetdicom: its idle poll waits for work instead, while busy."""
    if seconds == IDLE_POLL:
        thread: Any = threading.current_thread()
        if isinstance(thread, DULServiceProvider):
            if _busy(thread) and thread.socket is not None and thread.socket.socket is not None:
                # Wake as soon as the peer sends; check the outgoing queue every BUSY_POLL.
                try:
                    select.select([thread.socket.socket], [], [], BUSY_POLL)
                except (OSError, ValueError):
                    _time.sleep(seconds)
                return
        elif isinstance(getattr(thread, "dimse", None), DIMSEServiceProvider):
            # The association thread waits for a decoded message: wake when one is queued.
            messages = thread.dimse.msg_queue
            with messages.not_empty:
                if not messages._qsize():
                    messages.not_empty.wait(seconds)
                if messages._qsize():
                    # The put woke this waiter, not the reader: a requestor's operation
                    # reads its responses in another thread (queue.get), which would
                    # otherwise sleep through its own answer. Pass the wake-up on.
                    messages.not_empty.notify()
            return
    _time.sleep(seconds)


class _Clock(ModuleType):
    """The ``time`` module as pynetdicom's loops see it: everything as is, but ``sleep``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


_clock = _Clock("time")
_clock.sleep = sleep  # type: ignore[attr-defined]


def install() -> None:
    """Make pynetdicom's association and DUL loops use :func:`sleep`. Idempotent."""
    _dul.time = _clock  # type: ignore[attr-defined]
    _association.time = _clock  # type: ignore[attr-defined]
