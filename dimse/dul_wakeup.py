"""Waiting for work instead of sleeping, in pynetdicom's threads.

pynetdicom runs two polling loops per association: the DUL thread checks the socket and its
queues, and the association thread checks for decoded DIMSE messages, each sleeping 1 ms
whenever a pass found nothing to do. A C-STORE waits for both: the object is complete, the
association thread wakes up to a millisecond later to handle it, and the DUL thread wakes
up to a millisecond after that to send the response. One association sending a CT series
spent a third of each object asleep (pynetdicom alone: 200 objects/s with the 1 ms sleeps,
270 without).

:func:`install` (called by :mod:`dimse.pynetdicom_patches`, never on import) replaces
only those 1 ms idle sleeps. The association thread waits on its
message queue, so it wakes the moment a message is decoded. The DUL thread waits on its
socket and on a wake-up pipe that every primitive queued for it to send (a C-STORE
response) and every request to stop writes to, for at most :data:`DUL_WAIT`; so it neither
sleeps through a response nor wakes, and takes the interpreter lock, hundreds of times
while a received object is stored. The switch is made where pynetdicom looks ``time`` up
(its ``dul`` and ``association`` modules) and around the DUL's queue and stop calls; no
pynetdicom code is copied or changed.
"""

from __future__ import annotations

import os
import queue
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
# The longest a DUL thread waits without a reason to wake: its timers (ARTIM, network
# timeout) and any stop pynetdicom signals without a call are seen this late at worst.
DUL_WAIT = 0.05


class WakeUp:
    """A pipe that makes a DUL thread's wait return: written when there is work for it."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._lock = threading.Lock()
        self._closed = False
        # The DUL's wait leaves its socket out while the association's thread reads the
        # reply to what it wrote (dimse.direct_send); a put to the DUL's queue ends it.
        self.blind = False

    def set(self) -> None:
        # pynetdicom stops a DUL again after its thread has ended; by then the descriptor
        # number may belong to another file or socket, which must never get this byte.
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self.write_fd, b"\0")
            except BlockingIOError:
                pass  # full: a wake-up is pending anyway

    def clear(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self.read_fd)
            os.close(self.write_fd)


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's outgoing queue: a put wakes the DUL thread to send it."""

    def __init__(self, wake: WakeUp) -> None:
        super().__init__()
        self.wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.wake.blind = False
        self.wake.set()


def _wait_for_dul_work(dul: DULServiceProvider) -> bool:
    """Wait until the peer sends, something is queued to send, or a stop is asked for."""
    wake: WakeUp | None = getattr(dul, "_portal_wake", None)
    sock = dul.socket.socket if dul.socket is not None else None
    if wake is None or sock is None:
        return False
    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted are not seen
    if pending is not None and pending():
        return True
    try:
        waited_for: list[Any] = [wake.read_fd] if wake.blind else [sock, wake.read_fd]
        select.select(waited_for, [], [], DUL_WAIT)
    except (OSError, ValueError):
        return False
    wake.clear()  # the loop looks at its queues and socket next: nothing is missed
    return True


def sleep(seconds: float) -> None:
    """``time.sleep`` for pynetdicom: its idle poll waits for work instead."""
    if seconds == IDLE_POLL:
        thread: Any = threading.current_thread()
        if isinstance(thread, DULServiceProvider):
            if _wait_for_dul_work(thread):
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


def nudge(assoc: Any) -> None:
    """End ``assoc``'s idle wait (in :func:`sleep`) now: its thread goes on to its next turn.
    A waiter in ``queue.get`` woken too checks the queue again and waits on."""
    messages = assoc.dimse.msg_queue
    with messages.not_empty:
        messages.not_empty.notify_all()


class _Clock(ModuleType):
    """The ``time`` module as pynetdicom's loops see it: everything as is, but ``sleep``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


_clock = _Clock("time")
_clock.sleep = sleep  # type: ignore[attr-defined]

_dul_init = DULServiceProvider.__init__
_dul_run = DULServiceProvider.run_reactor
_dul_kill = DULServiceProvider.kill_dul
_dul_stop = DULServiceProvider.stop_dul


def _init(self: DULServiceProvider, assoc: Any) -> None:
    _dul_init(self, assoc)
    self._portal_wake = WakeUp()  # type: ignore[attr-defined]
    # dimse.direct_send's: every socket read and write of this DUL's, wherever it runs.
    self._portal_send_lock = threading.RLock()  # type: ignore[attr-defined]
    self.to_provider_queue = WakingQueue(self._portal_wake)  # type: ignore[attr-defined]


def _run_reactor(self: DULServiceProvider) -> None:
    try:
        _dul_run(self)
    finally:
        wake = getattr(self, "_portal_wake", None)
        if wake is not None:
            wake.close()


def _kill_dul(self: DULServiceProvider) -> None:
    _dul_kill(self)
    wake(self)


def _stop_dul(self: DULServiceProvider) -> bool:
    stopped = _dul_stop(self)
    wake(self)
    return stopped


def wake(dul: DULServiceProvider) -> None:
    """Make ``dul``'s thread look at its queues and socket now."""
    wake = getattr(dul, "_portal_wake", None)
    if wake is not None:
        wake.set()


def install() -> None:
    """Make pynetdicom's association and DUL loops wait with :func:`sleep`. Idempotent.

    Called through :func:`dimse.pynetdicom_patches.install`, which checks the version."""
    _dul.time = _clock  # type: ignore[attr-defined]
    _association.time = _clock  # type: ignore[attr-defined]
    DULServiceProvider.__init__ = _init  # type: ignore[method-assign]
    DULServiceProvider.run_reactor = _run_reactor  # type: ignore[method-assign]
    DULServiceProvider.kill_dul = _kill_dul  # type: ignore[method-assign]
    DULServiceProvider.stop_dul = _stop_dul  # type: ignore[method-assign]


def uninstall() -> None:
    """pynetdicom's own ``time`` and DUL methods again. Idempotent."""
    _dul.time = _time  # type: ignore[attr-defined]
    _association.time = _time  # type: ignore[attr-defined]
    DULServiceProvider.__init__ = _dul_init  # type: ignore[method-assign]
    DULServiceProvider.run_reactor = _dul_run  # type: ignore[method-assign]
    DULServiceProvider.kill_dul = _dul_kill  # type: ignore[method-assign]
    DULServiceProvider.stop_dul = _dul_stop  # type: ignore[method-assign]
