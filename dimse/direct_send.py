"""Writing to an association's socket from the association's own thread.

pynetdicom hands everything an association sends to its DUL thread (a queue, then the
DUL's loop and state machine write it) and everything it receives back the same way. A
C-GET or C-MOVE sub-operation crossed between the two threads four times: the object, the
peer's C-STORE response, the pending C-GET response, and their turns at the interpreter
lock; py-spy showed each sub-operation waiting on those hand-overs rather than on the peer.

When the DUL has nothing to do (in Sta6, data transfer, with nothing queued to send and no
event to act on) the bytes it would write next are the caller's, so the caller may write
them itself. Every socket read and write of the DUL (its actions, its check for and read
of a PDU from the peer) and every write here take the association's send lock, so they
never overlap and the wire carries the PDUs in the order pynetdicom would have sent them.
With :func:`install` (called by :mod:`dimse.pynetdicom_patches`, never on import):

* a P-DATA queued by any thread but the DUL's is written at once by that thread, with the
  DUL's own DT-1 code (``DULServiceProvider._send``), when the DUL is idle; else queued;
* :func:`exchange` writes a stored object's PDUs and reads the peer's next PDU in the
  calling thread, then lets pynetdicom's own DUL code decode and act on it
  (``_read_pdu_data`` and the state machine): a C-STORE response reaches the DIMSE queue
  as the DUL thread would have put it there.

TLS associations are left to the DUL thread. The lock is created with the DUL
(:mod:`dimse.dul_wakeup`'s ``__init__``); a DUL without one is left as pynetdicom runs it.
"""

from __future__ import annotations

import queue
import select
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pynetdicom import evt, fsm
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from .dul_wakeup import wake
from .patching import originals, restore

#: How long :func:`exchange` waits for the reply at a time before it looks whether the
#: DUL has been given something to do (an abort, a release): then the DUL takes over.
REPLY_SLICE = 0.05


def send_lock(dul: Any) -> Any:
    """The DUL's send lock (a :class:`threading.RLock`), or None."""
    return getattr(dul, "_portal_send_lock", None)


def idle_socket(dul: Any) -> Any:
    """The DUL's socket if a thread holding the send lock may use it now: the DUL is in
    Sta6 with nothing queued to send or act on, and the connection is not TLS; else None."""
    sock = dul.socket.socket if dul.socket is not None else None
    if (sock is None or isinstance(sock, ssl.SSLSocket) or dul._kill_thread
            or dul.to_provider_queue.qsize() or dul.event_queue.qsize()
            or dul.state_machine.current_state != "Sta6"):
        return None
    return sock


def send_all(sock: Any, data: bytes, timeout: float | None) -> None:
    """``data`` to ``sock``, raising :class:`TimeoutError` when the peer takes none of it
    for ``timeout`` seconds (pynetdicom's network timeout): a write here must not hold the
    send lock for ever."""
    view = memoryview(data)
    while view:
        if timeout is not None and not select.select([], [sock], [], timeout)[1]:
            raise TimeoutError("the peer read nothing for the network timeout")
        try:
            view = view[sock.send(view):]
        except (BlockingIOError, InterruptedError):
            continue


def blind(dul: Any, on: bool) -> None:
    """Have ``dul``'s idle wait leave its socket out (``on``) or not (dimse.dul_wakeup)."""
    wakeup = getattr(dul, "_portal_wake", None)
    if wakeup is not None:
        wakeup.blind = on


def look_again(assoc: Association) -> None:
    """Let ``assoc``'s DUL wait for the peer again, at once (its wait may have left the
    socket out while replies were read by :func:`exchange`): a retrieve's sub-operations
    are over, or what came was not the reply."""
    wakeup = getattr(assoc.dul, "_portal_wake", None)
    if wakeup is not None and wakeup.blind:
        wakeup.blind = False
        wakeup.set()


def _closed(dul: Any) -> None:
    """As pynetdicom's socket does when a write fails: Evt17, for the DUL to act on."""
    dul.event_queue.put("Evt17")
    blind(dul, False)
    wake(dul)


class Exchange:
    """What :func:`exchange` did: ``sent`` (False: nothing was read from the PDUs, send
    them through the DUL), and ``waited_out`` (the reply did not come within the DIMSE
    timeout: do not wait for it again)."""

    __slots__ = ("sent", "waited_out")

    def __init__(self, sent: bool, waited_out: bool = False) -> None:
        self.sent = sent
        self.waited_out = waited_out


def exchange(assoc: Association, pdus: Iterable[bytes],
             meanwhile: Callable[[], None] | None = None) -> Exchange:
    """Write ``pdus`` (encoded PDUs) and read the peer's next PDU in this thread, if the
    DUL is idle; the PDU read is decoded and acted on by pynetdicom's DUL code, so a reply
    is then on the DIMSE queue for ``get_msg``. The reply is waited for in slices of
    :data:`REPLY_SLICE`, for at most the DIMSE timeout, and no longer once something is
    queued for the DUL (it reads the reply then). ``meanwhile`` is called once the PDUs
    are written, before the wait: work that the peer's answering time then hides."""
    dul: Any = assoc.dul
    lock = send_lock(dul)
    if lock is None:
        return Exchange(sent=False)
    with lock:
        sock = idle_socket(dul)
        if sock is None:
            return Exchange(sent=False)
        try:
            for data in pdus:
                send_all(sock, data, assoc.network_timeout)
                evt.trigger(assoc, evt.EVT_DATA_SENT, {"data": data})
        except OSError:
            _closed(dul)
            return Exchange(sent=True)
        blind(dul, True)  # the reply is read here: the DUL's wait need not wake for it
        if meanwhile is not None:
            meanwhile()
        timeout = assoc.dimse_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while not select.select([sock], [], [], REPLY_SLICE)[0]:
            if dul.to_provider_queue.qsize() or dul._kill_thread or assoc._kill:
                look_again(assoc)
                return Exchange(sent=True)
            if deadline is not None and time.monotonic() >= deadline:
                look_again(assoc)
                return Exchange(sent=True, waited_out=True)
        dul._read_pdu_data()
        dul._idle_timer.restart()
        while True:
            try:
                event = dul.event_queue.get(block=False)
            except queue.Empty:
                break
            _pynetdicom_do_action(dul.state_machine, event)
        if not assoc.dimse.msg_queue.qsize():  # not the reply: the DUL reads what follows
            look_again(assoc)
    return Exchange(sent=True)


def _send_pdu(self: DULServiceProvider, primitive: Any) -> None:
    """pynetdicom's ``send_pdu``; a P-DATA from a thread other than the DUL's is written
    at once by that thread, as DT-1 writes it, when the DUL is idle."""
    lock = send_lock(self)
    if (lock is not None and type(primitive) is P_DATA
            and threading.current_thread() is not self):
        with lock:
            if idle_socket(self) is not None:
                self._send(P_DATA_TF(primitive))
                if self.event_queue.qsize():  # the write failed: Evt17 is queued
                    wake(self)
                return
    _pynetdicom_send_pdu(self, primitive)


def _do_action(self: fsm.StateMachine, event: str) -> None:
    """pynetdicom's ``StateMachine.do_action`` under the send lock."""
    lock = send_lock(self.dul)
    if lock is None:
        _pynetdicom_do_action(self, event)
        return
    with lock:
        _pynetdicom_do_action(self, event)


def _is_transport_event(self: DULServiceProvider) -> bool:
    """pynetdicom's check for (and read of) a PDU from the peer, under the send lock:
    the association's thread may be reading the reply to what it sent."""
    lock = send_lock(self)
    if lock is None:
        return _pynetdicom_is_transport_event(self)
    with lock:
        return _pynetdicom_is_transport_event(self)


_ORIGINALS = originals((
    (fsm.StateMachine, "do_action"),
    (DULServiceProvider, "_is_transport_event"),
    (DULServiceProvider, "send_pdu"),
))
_pynetdicom_do_action = fsm.StateMachine.do_action
_pynetdicom_is_transport_event = DULServiceProvider._is_transport_event
_pynetdicom_send_pdu = DULServiceProvider.send_pdu


def install() -> None:
    """Let associations' threads write to their sockets when the DUL is idle. Idempotent.

    Called through :func:`dimse.pynetdicom_patches.install`, which checks the version."""
    setattr(fsm.StateMachine, "do_action", _do_action)  # noqa: B010
    setattr(DULServiceProvider, "_is_transport_event", _is_transport_event)  # noqa: B010
    setattr(DULServiceProvider, "send_pdu", _send_pdu)  # noqa: B010


def uninstall() -> None:
    """pynetdicom's own methods again. Idempotent."""
    restore(_ORIGINALS)


def installed() -> bool:
    return vars(DULServiceProvider).get("send_pdu") is _send_pdu
