"""pynetdicom's idle sleeps, replaced by waits for work, never take a message's wake-up
away from the thread that reads it."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from dimse import dul_wakeup
from dimse.models import Peer
from dimse.testing import RunningListener, dcmtk


class FakeAssociation(threading.Thread):
    """An association thread as the shim sees it: a thread with a DIMSE provider."""

    def __init__(self, messages: queue.Queue[object]) -> None:
        super().__init__(daemon=True)
        self.dimse = DIMSEServiceProvider.__new__(DIMSEServiceProvider)
        self.dimse.msg_queue = messages  # type: ignore[assignment]

    def run(self) -> None:
        dul_wakeup.sleep(dul_wakeup.IDLE_POLL)


def _read(messages: queue.Queue[object], got: list[tuple[object, float]]) -> None:
    """Wait for one message as pynetdicom's requestor does (a long timeout); note when."""
    got.append((messages.get(timeout=5), time.monotonic()))


def _waiters(messages: queue.Queue[object]) -> int:
    return len(messages.not_empty._waiters)  # type: ignore[attr-defined]


def test_a_response_reaches_the_thread_waiting_for_it_while_the_reactor_idles(
    monkeypatch: pytest.MonkeyPatch,
):
    """As in a C-MOVE: the reactor of the sub-association idles while the handler's thread
    waits for the C-STORE response on the same queue."""
    # An idle wait long enough for this test to see it waiting on a busy machine (with
    # pynetdicom's 1 ms, the reactor could be done before the reader started).
    monkeypatch.setattr(dul_wakeup, "IDLE_POLL", 5.0)
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


class _Peer:
    """Where a DUL thread as the shim sees it reads from: one end of a socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


def _waiting_dul(monkeypatch: pytest.MonkeyPatch, longest: float = 5.0, blind: bool = False,
                 ) -> tuple[DULServiceProvider, socket.socket, list[float]]:
    """A DUL thread that makes one idle wait of at most ``longest`` (by default long enough
    to tell a wake-up from a time-out); returns it (started), the peer's socket, and when
    the wait ended. ``blind``: the association's thread is reading the replies."""
    monkeypatch.setattr(dul_wakeup, "DUL_WAIT", longest)
    dul_wakeup.install()
    ours, peer = socket.socketpair()
    dul = DULServiceProvider(SimpleNamespace())  # type: ignore[arg-type]
    dul.socket = _Peer(ours)  # type: ignore[assignment]
    dul._portal_wake.blind = blind  # type: ignore[attr-defined]
    ended: list[float] = []

    def wait() -> None:
        dul_wakeup.sleep(dul_wakeup.IDLE_POLL)
        ended.append(time.monotonic())

    dul._target = wait  # type: ignore[attr-defined]
    dul.start()
    time.sleep(0.05)  # let it reach its wait
    assert not ended, "the DUL thread should be waiting"
    return dul, peer, ended


def _woken_within(dul: DULServiceProvider, ended: list[float], since: float) -> float:
    dul.join(timeout=5)
    assert ended
    return ended[0] - since


@pytest.mark.parametrize("work", ["a response to send", "a stop", "bytes from the peer"])
@pytest.mark.usefixtures("patched_pynetdicom")
def test_an_idle_dul_thread_wakes_at_once_for_work(monkeypatch: pytest.MonkeyPatch,
                                                   work: str):
    dul, peer, ended = _waiting_dul(monkeypatch)
    since = time.monotonic()
    if work == "a response to send":
        dul.to_provider_queue.put(P_DATA())
    elif work == "a stop":
        dul.kill_dul()
    else:
        peer.sendall(b"\x04")
    assert _woken_within(dul, ended, since) < 1.0  # not the 5 s wait
    peer.close()
    dul.socket.socket.close()  # type: ignore[union-attr]


@pytest.mark.usefixtures("patched_pynetdicom")
def test_an_idle_dul_thread_with_nothing_to_do_keeps_waiting(monkeypatch: pytest.MonkeyPatch):
    dul, peer, ended = _waiting_dul(monkeypatch, longest=0.3)
    assert _woken_within(dul, ended, time.monotonic() - 0.05) >= 0.25
    peer.close()
    dul.socket.socket.close()  # type: ignore[union-attr]


@pytest.mark.usefixtures("patched_pynetdicom")
def test_while_the_association_reads_its_replies_bytes_from_the_peer_leave_the_dul_waiting(
        monkeypatch: pytest.MonkeyPatch):
    """dimse.direct_send reads the reply to what it wrote; the DUL's wait leaves the socket
    out meanwhile, so the reply does not wake it to contend for the interpreter lock."""
    dul, peer, ended = _waiting_dul(monkeypatch, longest=0.4, blind=True)
    since = time.monotonic()
    peer.sendall(b"\x04")
    assert _woken_within(dul, ended, since) >= 0.3  # its time-out, not the bytes
    peer.close()
    dul.socket.socket.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("work", ["a primitive queued", "the replies are over"])
@pytest.mark.usefixtures("patched_pynetdicom")
def test_a_dul_waiting_blind_wakes_at_once_for_work_and_sees_its_socket_again(
        monkeypatch: pytest.MonkeyPatch, work: str):
    from dimse import direct_send

    dul, peer, ended = _waiting_dul(monkeypatch, blind=True)
    since = time.monotonic()
    if work == "a primitive queued":
        dul.to_provider_queue.put(P_DATA())
    else:
        direct_send.look_again(SimpleNamespace(dul=dul))  # type: ignore[arg-type]
    assert _woken_within(dul, ended, since) < 1.0  # not the 5 s wait
    assert dul._portal_wake.blind is False  # type: ignore[attr-defined]
    peer.close()
    dul.socket.socket.close()  # type: ignore[union-attr]


@pytest.mark.django_db(transaction=True)
def test_associations_leave_no_wake_up_pipes_open(portal: RunningListener):
    """Each association's DUL thread has a pipe of its own; it is closed when it ends."""
    Peer.objects.create(ae_title="ECHOER", host="127.0.0.1")

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    def echo() -> None:
        result = dcmtk("echoscu", "-aet", "ECHOER", "-aec", portal.ae_title, *portal.address())
        assert result.returncode == 0, result.stderr
        portal.wait_idle()

    echo()
    before = open_files()
    for _ in range(10):
        echo()
    time.sleep(0.2)  # the last association's DUL thread ends just after its reactor
    # A pipe left open would be two descriptors per association; allow a socket or two
    # that another part of the process has open for a moment.
    assert open_files() < before + 5


def test_a_wake_up_after_its_pipe_is_closed_writes_nowhere():
    """pynetdicom stops a DUL again after its thread ended and closed its pipe; the
    descriptor numbers may by then belong to another file, which must not get the byte."""
    wake = dul_wakeup.WakeUp()
    numbers = (wake.read_fd, wake.write_fd)
    wake.close()
    reader, writer = numbers  # another pipe now has the numbers just closed
    for fresh, number in zip(os.pipe(), numbers, strict=True):
        if fresh != number:
            os.dup2(fresh, number)
            os.close(fresh)
    try:
        wake.set()
        wake.close()  # closing twice closes nothing of the new pipe
        os.set_blocking(reader, False)
        with pytest.raises(BlockingIOError):
            os.read(reader, 1)  # nothing was written into the new pipe
        os.write(writer, b"x")  # and it is still open
    finally:
        os.close(reader)
        os.close(writer)


def test_a_nudge_ends_the_reactors_idle_wait_and_a_readers_wait_goes_on(
    monkeypatch: pytest.MonkeyPatch,
):
    """A sender pausing the reactor (dimse.stored_send.pause_reactor) nudges it to its
    checkpoint rather than waiting for its idle wait to end; a reader waiting for its
    answer on the same queue is woken too and waits on (queue.get checks again)."""
    monkeypatch.setattr(dul_wakeup, "IDLE_POLL", 30.0)
    messages: queue.Queue[object] = queue.Queue()
    reactor = FakeAssociation(messages)
    reactor.start()
    got: list[tuple[object, float]] = []
    reader = threading.Thread(target=_read, args=(messages, got))
    reader.start()
    while _waiters(messages) < 2:
        time.sleep(0)
    dul_wakeup.nudge(SimpleNamespace(dimse=reactor.dimse))
    reactor.join(5)
    assert not reactor.is_alive()  # well before its 30 s
    assert reader.is_alive() and not got
    messages.put("the answer")
    reader.join(5)
    assert [message for message, _ in got] == ["the answer"]
