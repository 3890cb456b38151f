"""The DICOM listener: one pynetdicom AE with every handler bound to one :class:`Listener`.

Services: Verification; Storage for every storage SOP class in the common transfer syntaxes
(stored as received, never transcoded); Patient Root and Study Root Query/Retrieve with
FIND, MOVE and GET; Modality Worklist FIND and Modality Performed Procedure Step
N-CREATE/N-SET. Each association runs in its own thread, so several peers are served
at once.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from django.conf import settings
from django.db import connection, connections
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

from audit import writer
from imaging import ingest
from ops import dimse_hooks

from . import handlers, pynetdicom_patches, retrieve, store
from .handlers import Listener
from .sop_classes import (
    MODALITY_PERFORMED_PROCEDURE_STEP,
    MODALITY_WORKLIST_FIND,
    QUERY_RETRIEVE,
    VERIFICATION,
)

_UNCOMPRESSED_LAST = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
)
# pynetdicom accepts, of the syntaxes a peer proposes, the first in this order. Explicit VR
# Little Endian first, then every compressed syntax (a peer proposing one has such files),
# then the other uncompressed ones: so objects arrive, and leave by C-GET, as they are.
STORAGE_SYNTAXES = [
    "1.2.840.10008.1.2.1",
    *(ts for ts in ALL_TRANSFER_SYNTAXES if ts not in ("1.2.840.10008.1.2.1", *_UNCOMPRESSED_LAST)),
    *_UNCOMPRESSED_LAST,
]
DEFAULT_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
]

# Peers may send us PDUs this large: fewer, larger reads for every C-STORE.
MAXIMUM_PDU_SIZE = 128 * 1024  # DCMTK sends at most this much a PDU anyway
MAXIMUM_ASSOCIATIONS = 64



class SupportedContext(PresentationContext):
    """A presentation context every association shares instead of copying.

    pynetdicom deep-copies every supported context for each new association; with ~170
    storage SOP classes in ~45 transfer syntaxes that took a quarter of a second per
    association, and a copy of each still took 4 ms of an 18 ms C-ECHO. An acceptor's
    supported contexts are only read (negotiation builds new contexts for its results) and
    the listener never changes them once it has started, so the copy is the context itself
    (tests/test_dimse_supported_contexts.py checks they come out of associations as they
    went in).
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> SupportedContext:
        return self


def _context(
    abstract_syntax: str, transfer_syntaxes: list[str], *, roles: bool = False
) -> SupportedContext:
    cx = SupportedContext()
    cx.abstract_syntax = abstract_syntax
    cx.transfer_syntax = transfer_syntaxes  # type: ignore[assignment]
    if roles:
        cx.scu_role = True
        cx.scp_role = True
    return cx


def supported_contexts() -> list[PresentationContext]:
    """Verification, Storage for every storage SOP class in every transfer syntax pynetdicom
    knows (stored as received, never transcoded), and Query/Retrieve."""
    contexts: list[PresentationContext] = [_context(VERIFICATION, DEFAULT_SYNTAXES)]
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        # Both roles: peers send us objects (C-STORE) and take them back by C-GET, where we
        # are the Storage SCU on their association.
        contexts.append(_context(cx.abstract_syntax, STORAGE_SYNTAXES, roles=True))
    contexts += [_context(uid, DEFAULT_SYNTAXES) for uid in QUERY_RETRIEVE]
    contexts.append(_context(MODALITY_WORKLIST_FIND, DEFAULT_SYNTAXES))
    contexts.append(_context(MODALITY_PERFORMED_PROCEDURE_STEP, DEFAULT_SYNTAXES))
    return contexts


def build_ae(listener: Listener) -> AE:
    ae = AE(ae_title=listener.ae_title)
    ae.require_called_aet = True
    ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
    ae.maximum_associations = MAXIMUM_ASSOCIATIONS
    ae.network_timeout = listener.network_timeout
    ae.acse_timeout = 30
    ae.dimse_timeout = listener.network_timeout
    return ae


def event_handlers(listener: Listener) -> list[Any]:
    from . import mpps, worklist

    return [
        (evt.EVT_CONN_OPEN, handlers.tune_socket, [listener]),
        (evt.EVT_REQUESTED, handlers.on_requested, [listener]),
        (evt.EVT_ACSE_SENT, handlers.before_release_answer, [listener]),
        (evt.EVT_RELEASED, handlers.on_released, [listener]),
        (evt.EVT_ABORTED, handlers.on_aborted, [listener]),
        (evt.EVT_CONN_CLOSE, handlers.on_conn_close, [listener]),
        (evt.EVT_C_ECHO, handlers.handle_echo, [listener]),
        (evt.EVT_C_STORE, store.handle_store, [listener]),
        (evt.EVT_C_FIND, worklist.handle_find, [listener]),  # MWL, else find
        (evt.EVT_C_GET, retrieve.handle_get, [listener]),
        (evt.EVT_C_MOVE, retrieve.handle_move, [listener]),
        (evt.EVT_N_CREATE, mpps.handle_create, [listener]),  # MPPS
        (evt.EVT_N_SET, mpps.handle_set, [listener]),
        (evt.EVT_DIMSE_SENT, dimse_hooks.on_dimse_sent),  # operations counted (ops/)
    ]


def prepare_database() -> None:
    """The serving process's database access, in the process that serves (after a fork).

    Each association runs in a thread of its own, with a connection of its own that it
    closes when it ends. On PostgreSQL, opening it (a new server process, authentication)
    cost every association about 10 ms, so (``DICOM_DATABASE_POOL``) they come from a
    pool instead: Django's own pooling, turned on here for this process only, as a fork
    must not inherit a pool's threads and sockets and the web server keeps its persistent
    connections. Closing a pooled connection gives it back; a pooled one is checked before
    it is handed out (it may have died with a database restart), and a thread waits at most
    :data:`dimse.pooled_postgresql.base.READY_WAIT` for one before it opens its own (the
    database down: that fails at once, and the operation with it, as without the pool).

    On SQLite, a connection an association's thread closes is kept for the next one
    (:func:`reuse_sqlite_connections`). And one connection stays open in this (the
    serving) thread: SQLite checkpoints and
    syncs its write-ahead log whenever the last connection to the database closes, which
    cost every association ten milliseconds; with this one open, theirs never is the last.
    """
    if settings.DICOM_DATABASE_POOL:
        pool_connections()
    reuse_sqlite_connections()
    connection.ensure_connection()


def reuse_sqlite_connections() -> None:
    """This process's SQLite connections handed from one association's thread to the next
    (:mod:`dimse.reused_sqlite`) instead of one opened and closed per association."""
    for alias in connections:
        wrapper = connections[alias]
        if wrapper.vendor == "sqlite" and not wrapper.is_in_memory_db():  # type: ignore[attr-defined]
            _use_backend(alias, "dimse.reused_sqlite")


def _use_backend(alias: str, engine: str, **changes: Any) -> None:
    """``alias``'s connections made by ``engine`` (with these settings changed) in this
    process from now on: this thread's is closed and made again, with that backend."""
    wrapper = connections[alias]
    wrapper.close()
    # The settings every thread's connection is made from (one dict per alias).
    wrapper.settings_dict.update(ENGINE=engine, **changes)
    del connections[alias]


#: Seconds a plain getconn of the pool waits (the listener's threads wait READY_WAIT only).
POOL_WAIT = 2.0
#: Seconds the pool keeps retrying a connection that fails before it gives up.
POOL_RECONNECT = 5.0


def pool_connections(max_size: int = 2 * MAXIMUM_ASSOCIATIONS + 4) -> None:
    """Have this process's PostgreSQL connections come from a pool of at most ``max_size``
    (an association's thread and its indexing thread each hold one)."""
    for alias in connections:
        wrapper = connections[alias]
        if wrapper.vendor != "postgresql" or wrapper.settings_dict["OPTIONS"].get("pool"):
            continue
        # A reconnection that keeps failing gives up after POOL_RECONNECT seconds (its
        # delays double from 1 s), and the next association starts a fresh one. With
        # several processes, the cluster test once saw one refuse an association right
        # after a restart while its pool was reconnecting: a thread now waits
        # dimse.pooled_postgresql.READY_WAIT for the pool, then opens its own.
        pool = {"min_size": 1, "max_size": max_size, "max_idle": 60.0,
                "timeout": POOL_WAIT, "reconnect_timeout": POOL_RECONNECT}
        # Django's pool, with a connection of its own for a thread when the pool has none
        # ready (dimse.pooled_postgresql); the pool checks each one it hands out.
        _use_backend(alias, "dimse.pooled_postgresql", CONN_MAX_AGE=0,
                     CONN_HEALTH_CHECKS=True,
                     OPTIONS={**wrapper.settings_dict["OPTIONS"], "pool": pool})


#: Seconds a stopping listener process waits for the audit entries still being written.
SHUTDOWN_FLUSH_WAIT = 5.0


def flush_audit_on_signals(*signals: signal.Signals) -> None:
    """``signals`` (by default SIGTERM and SIGINT) end this serving process as before (at
    once, by the signal), but after the audit entries handed to the writer thread are
    committed (at most :data:`SHUTDOWN_FLUSH_WAIT` seconds): an association accepted just
    before is on the trail. (An interpreter that exits normally flushes them too.)"""

    def stop(signum: int, frame: Any) -> None:
        writer.flush(SHUTDOWN_FLUSH_WAIT)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in signals or (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)


def prepare_pynetdicom(patches: bool | None = None) -> None:
    """Configure pynetdicom for the listener, with its patches (``patches``, by default
    ``DICOM_PYNETDICOM_PATCHES``) or as it is; see :mod:`dimse.pynetdicom_patches`."""
    if patches is None:
        patches = settings.DICOM_PYNETDICOM_PATCHES
    pynetdicom_patches.apply(patches)


def start(
    listener: Listener, host: str, port: int, *, block: bool = True,
    patches: bool | None = None,
) -> ThreadedAssociationServer | None:
    """Listen on ``host:port``. Blocking, until interrupted; or in a thread, returning the
    server (stop it with ``server.shutdown()``). ``patches``: see :func:`prepare_pynetdicom`.
    """
    prepare_pynetdicom(patches)
    ingest.prepare()
    if block:
        prepare_database()
        flush_audit_on_signals(signal.SIGTERM)  # Ctrl-C stops the server, then exits
    ae = build_ae(listener)
    return ae.start_server((host, port), block=block, evt_handlers=event_handlers(listener),
                           contexts=supported_contexts())
