"""Association life cycle and C-ECHO: who is calling, may they associate, and clean-up.

Every handler gets the :class:`Listener` bound by :mod:`dimse.server`, never a global. The
association handlers run in the association's own thread (pynetdicom runs one per
association), so that is where stale database connections are closed: when the peer is
recognised and when the association ends.

An association is answered without touching the database: the peer comes from the
process's copy of the peer table (:mod:`dimse.peers`), and the entry of an accepted
association is committed by the audit writer thread (:mod:`audit.writer`) while the
association is set up. Every operation on patient data waits for that entry first
(:meth:`Listener.session`), and so does the release's answer: the trail has the
association before anything it did, and an association that has ended is on it. A C-ECHO,
which touches no data, does not wait.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, connections
from pynetdicom.pdu_primitives import A_RELEASE

from audit import writer
from audit.models import AuditAction, Outcome
from audit.trail import Actor, record
from imaging.ingest import IngestResult
from ops import dimse_hooks

from .indexing import BackgroundIndex
from .models import Peer
from .peers import recognise
from .policies import decide_peer, principal_for
from .statuses import Status
from .store import AUDIT_BATCH, StoredLog, flush

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source and reason.
REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
REASON_NO_REASON = 0x01
REASON_CALLING_AE_NOT_RECOGNISED = 0x03


@dataclass
class Session:
    """The accepted peer of one association, as the operations on it need it."""

    peer: Peer | None
    actor: Actor
    calling_ae: str
    # The association's entry on the trail, handed to the audit writer (None: written).
    opened: writer.Pending | None = None
    stored: StoredLog = field(default_factory=StoredLog)
    ending: bool = False
    released: bool = False  # the release is answered: a connection closed now is no abort
    lock: threading.Lock = field(default_factory=threading.Lock)
    index: BackgroundIndex = field(init=False)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        clinic = self.peer.clinic_id if self.peer is not None else None
        self.index = BackgroundIndex(self.actor, self.duplicate, clinic_id=clinic,
                                     principal=principal_for(
                                         self.peer,
                                         allow_unknown=settings.DICOM_ALLOW_UNKNOWN_PEERS))

    @property
    def clinics(self) -> frozenset[int] | None:
        """The clinics this peer stores for: its own, or any when it is not bound."""
        clinic = self.peer.clinic_id if self.peer is not None else None
        return None if clinic is None else frozenset({clinic})

    def duplicate(self, result: IngestResult) -> None:
        """An object already held (it writes no rows): on the trail with the next batch.
        Objects stored are on it with their index rows (dimse.indexing)."""
        if self.stored.add(result) >= AUDIT_BATCH:
            flush(self.actor, self.stored)

    def on_the_trail(self) -> bool:
        """Wait until the association's entry is committed; False if it could not be."""
        return self.opened is None or self.opened.wait()

    def claim_end(self) -> bool:
        """True for the first of the threads that see the association end (its own thread on
        release or abort, the network thread when the connection closes), False after."""
        with self.lock:
            first, self.ending = not self.ending, True
            return first


@dataclass
class Listener:
    """What the handlers share: configuration, and the session of each live association."""

    ae_title: str
    network_timeout: float | None = 60.0
    sessions: WeakKeyDictionary[Association, Session] = field(default_factory=WeakKeyDictionary)

    @property
    def allow_unknown_peers(self) -> bool:
        return bool(settings.DICOM_ALLOW_UNKNOWN_PEERS)

    def session(self, assoc: Association, *, caught_up: bool = False) -> Session | None:
        """The association's session, once its entry is on the audit trail (``None`` when
        that entry cannot be written: no operation then); ``caught_up``: once every object
        it has sent is indexed, so that a query or retrieve on it finds them."""
        session = self.sessions.get(assoc)
        if session is not None:
            try:
                _opened_on_the_trail(session)  # tried again here if the writer could not
            except Exception:
                log.exception("association from %s refused an operation: its audit entry "
                              "cannot be written", session.calling_ae)
                return None
        if session is not None and caught_up:
            session.index.drain()
        return session


def tune_socket(event: Event, listener: Listener) -> None:
    """EVT_CONN_OPEN: no Nagle delay, and no send that blocks forever on a peer that never
    reads (the timeout turns a stalled peer into a closed connection)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is None:
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(listener.network_timeout)


def on_requested(event: Event, listener: Listener) -> None:
    """EVT_REQUESTED: accept known peers, reject the others with "calling AE not recognised"."""
    assoc = event.assoc
    request = assoc.requestor.primitive
    calling = str(request.calling_ae_title if request else "").strip()
    address, port = assoc.requestor.address, assoc.requestor.port
    actor = Actor.peer(calling, address, port)
    try:
        close_old_connections()
        peer = recognise(calling, address)
        decision = decide_peer(peer, AuditAction.ASSOCIATION,
                               allow_unknown=listener.allow_unknown_peers)
        detail = {"event": "request", "called_ae": str(request.called_ae_title).strip()
                  if request else "", "process": os.getpid()}
        opened = None
        if decision:
            opened = writer.record_later(AuditAction.ASSOCIATION, actor, None,
                                         Outcome.ALLOWED, reason=decision.why, detail=detail)
        else:
            record_refusal(actor, address, decision.why, detail)
    except Exception:
        log.exception("cannot decide on the association from %s at %s", calling, address)
        _reject(assoc, REJECTED_TRANSIENT, REASON_NO_REASON)
        dimse_hooks.association_decided(False, calling, address)
        return
    dimse_hooks.association_decided(bool(decision), calling, address)
    if not decision:
        log.warning("refused association from %r at %s: %s", calling, address, decision.why)
        _reject(assoc, REJECTED_PERMANENT, REASON_CALLING_AE_NOT_RECOGNISED)
        return
    listener.sessions[assoc] = Session(peer=peer, actor=actor, calling_ae=calling,
                                       opened=opened)


def record_refusal(actor: Actor, address: str, why: str, detail: dict[str, Any]) -> None:
    """A refused association on the trail, at most once per calling address and
    ``DICOM_REFUSAL_AUDIT_WINDOW`` seconds.

    Each entry takes the trail's chain lock, so a flood of refused connections from one
    address would fill the trail and slow every audited read. The first refusal from an
    address opens a window and is written; the ones after it in that window are counted in
    the cache (shared by the listener's processes when it is Redis), and the next entry
    from that address says how many there were (``refused_unrecorded``).
    """
    window = settings.DICOM_REFUSAL_AUDIT_WINDOW
    opened = cache.add(_REFUSAL_WINDOW.format(address), True, timeout=window)
    counter = _REFUSALS_UNRECORDED.format(address)
    if not opened:
        cache.add(counter, 0, timeout=None)
        try:
            cache.incr(counter)
        except ValueError:  # evicted between the two calls
            cache.set(counter, 1, timeout=None)
        return
    unrecorded = int(cache.get(counter) or 0)
    if unrecorded:
        try:
            cache.decr(counter, unrecorded)  # refusals counted meanwhile stay counted
        except ValueError:
            pass  # evicted meanwhile
    record(AuditAction.ASSOCIATION, actor, None, Outcome.DENIED, reason=why,
           detail={**detail, "refused_unrecorded": unrecorded, "window_seconds": window})


_REFUSAL_WINDOW = "dimse:refusal-window:{}"
_REFUSALS_UNRECORDED = "dimse:refusals-unrecorded:{}"


def _reject(assoc: Association, result: int, reason: int) -> None:
    """Send an A-ASSOCIATE-RJ and wait until it is on the wire, as pynetdicom does when it
    rejects by itself; otherwise the socket closes first and the peer sees an abort."""
    assoc.acse.send_reject(result, SOURCE_SERVICE_USER, reason)
    assoc.kill()


def discard_partial_object(assoc: Association) -> None:
    """Delete the temporary file of a C-STORE cut off mid-dataset.

    pynetdicom writes an incoming dataset to a temporary file as it arrives and deletes it
    after the C-STORE handler ran; when the association ends before the last fragment, no
    handler runs and the partial file would stay behind (pynetdicom 3.0.4).
    """
    message = getattr(assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    try:
        partial.close()
        os.unlink(partial.name)
    except OSError:
        pass


def _end(listener: Listener, assoc: Association, *, aborted: bool) -> None:
    """Write what is still unwritten for the association, then give this thread's database
    connection back. Runs once per association, in whichever thread sees its end first."""
    discard_partial_object(assoc)
    session = listener.sessions.get(assoc)
    if session is not None and not session.claim_end():
        return  # another thread is already writing this association's end
    try:
        if session is not None:
            _opened_on_the_trail_or_logged(session)
            session.index.drain()  # what was answered for is indexed, then on the trail
            flush(session.actor, session.stored)
            if aborted:
                record(AuditAction.ASSOCIATION, session.actor, None, Outcome.FAILED,
                       reason="association aborted or connection lost",
                       detail={"event": "abort"})
    except Exception:
        log.exception("cannot write the end of an association to the audit trail")
    finally:
        if session is not None:
            dimse_hooks.association_ended(session.calling_ae, session.actor.ip,
                                          session.started, aborted=aborted)
        # Gone from the live sessions only once all is written (tests wait for this).
        listener.sessions.pop(assoc, None)
        connections.close_all()


def _opened_on_the_trail(session: Session) -> None:
    """The association's entry committed: waited for, or, if the writer could not write
    it, written here (the database may be back by the end of the association)."""
    if session.opened is None or session.on_the_trail():
        return
    session.opened.write()  # raises if it still cannot


def _opened_on_the_trail_or_logged(session: Session) -> None:
    try:
        _opened_on_the_trail(session)
    except Exception:
        log.exception("cannot write the association from %s to the audit trail",
                      session.calling_ae)


def before_release_answer(event: Event, listener: Listener) -> None:
    """EVT_ACSE_SENT: the A-RELEASE response goes out only once the association's entry is
    on the trail and every object the peer sent is indexed; a sender that has finished
    finds all it sent."""
    primitive = event.primitive  # type: ignore[attr-defined]
    if isinstance(primitive, A_RELEASE) and primitive.result is not None:
        session = listener.sessions.get(event.assoc)
        if session is not None:
            _opened_on_the_trail_or_logged(session)
            session.index.drain()
            # The peer closes the connection as soon as it has the answer, which the
            # network thread may see before this thread marks the association released.
            session.released = True


def on_released(event: Event, listener: Listener) -> None:
    """EVT_RELEASED: the peer is done."""
    _end(listener, event.assoc, aborted=False)


def on_aborted(event: Event, listener: Listener) -> None:
    """EVT_ABORTED: on the record (an abort can cut a transfer short)."""
    _end(listener, event.assoc, aborted=True)


def on_conn_close(event: Event, listener: Listener) -> None:
    """EVT_CONN_CLOSE: a peer that drops the connection without a release or an abort
    still gets its association closed on the record."""
    session = listener.sessions.get(event.assoc)
    if session is not None:
        _end(listener, event.assoc, aborted=not (event.assoc.is_released or session.released))
    else:
        discard_partial_object(event.assoc)


def handle_echo(event: Event, listener: Listener) -> int:
    """EVT_C_ECHO: any accepted peer may verify the connection (touching no data, it does
    not wait for the association's entry; the release does)."""
    return Status.SUCCESS if listener.sessions.get(event.assoc) else Status.NOT_AUTHORISED
