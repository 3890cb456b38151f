"""pynetdicom's idle sleeps, replaced by waits for work, never take a message's wake-up
away from the thread that reads it."""

from __future__ import annotations

import queue
import threading
import time

from pynetdicom.dimse import DIMSEServiceProvider

from dimse import polling


class FakeAssociation(threading.Thread):
    """An association thread as the shim sees it: a thread with a DIMSE provider."""

    def __init__(self, messages: queue.Queue[object]) -> None:
        super().__init__(daemon=True)
        self.dimse = DIMSEServiceProvider.__new__(DIMSEServiceProvider)
        self.dimse.msg_queue = messages  # type: ignore[assignment]

    def run(self) -> None:
        polling.sleep(polling.IDLE_POLL)


def _read(messages: queue.Queue[object], got: list[tuple[object, float]]) -> None:
    """Wait for one message as pynetdicom's requestor does (a long timeout); note when."""
    got.append((messages.get(timeout=5), time.monotonic()))


def _waiters(messages: queue.Queue[object]) -> int:
    return len(messages.not_empty._waiters)  # type: ignore[attr-defined]


def test_a_response_reaches_the_thread_waiting_for_it_while_the_reactor_idles():
    """As in a C-MOVE: the reactor of the sub-association idles while the handler's thread
    waits for the C-STORE response on the same queue."""
    for _ in range(20):
        messages: queue.Queue[object] = queue.Queue()
        reactor = FakeAssociation(messages)
        reactor.start()
        while _waiters(messages) < 1:  # the reactor waits first, so it is woken first
            time.sleep(0)
        got: list[tuple[object, float]] = []
        reader = threading.Thread(target=_read, args=(messages, got))
        reader.start()
        while _waiters(messages) < 2:
            time.sleep(0)
        sent = time.monotonic()
        messages.put("C-STORE-RSP")
        reader.join()
        reactor.join()
        [(message, received)] = got
        assert message == "C-STORE-RSP"
        assert received - sent < 0.25  # woken by the put, not by its own timeout
