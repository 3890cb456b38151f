"""C-STORE SCP: every received object goes through the one ingest path, unchanged.

pynetdicom writes the received dataset, as it came off the wire, behind a File Meta
header into a temporary Part 10 file (``STORE_RECV_CHUNKED_DATASET``); the handler hands
that file to ingest's first half (:func:`imaging.ingest.stage`), which checks it and
stores it under an opaque key, or refuses it whole. The answer maps the outcome to a
Storage Service Class status; a staged object's index rows are written behind the answer
(:mod:`dimse.indexing`).

Audit: objects stored are on the trail with their index rows, in the same transaction (one
entry per study and index batch, see :mod:`dimse.indexing`). Duplicates, which write no
rows, are collected: one entry per study and batch (at most :data:`AUDIT_BATCH` objects, and
whatever is left when the association ends), listing their SOP Instance UIDs; refusals and
failures are written at once, one entry each.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from django.conf import settings
from django.db import close_old_connections

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import blobs
from imaging.ingest import IngestResult, Staged, stage
from imaging.ingest import Outcome as IngestOutcome
from imaging.sources import too_large
from imaging.store_audit import record_stores

from .indexing import spool
from .policies import decide_peer
from .statuses import Status

if TYPE_CHECKING:
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event

    from .handlers import Listener, Session

log = logging.getLogger(__name__)

AUDIT_BATCH = 100

_STATUS = {
    IngestOutcome.STORED: Status.SUCCESS,
    # The same bytes are already held: the sender may forget them, as after a success.
    IngestOutcome.DUPLICATE: Status.SUCCESS,
    IngestOutcome.CONFLICT: Status.DUPLICATE_SOP_INSTANCE,
    IngestOutcome.REJECTED: Status.STORE_CANNOT_UNDERSTAND,
}


@dataclass
class StoredLog:
    """Duplicates received on one association, not yet on the audit trail."""

    results: list[IngestResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, result: IngestResult) -> int:
        with self.lock:
            self.results.append(result)
            return len(self.results)

    def take(self) -> list[IngestResult]:
        with self.lock:
            taken, self.results = self.results, []
            return taken


def flush(actor: Actor, stored: StoredLog) -> None:
    """Write the duplicates collected so far: one entry per study."""
    taken = stored.take()
    if taken:
        record_stores(actor, taken, via="C-STORE")


def _stage(session: Session, received: Path) -> IngestResult:
    """Stage the received file; a staged object is spooled and queued for its index rows,
    and counts as stored."""
    with open(received, "rb") as fp:
        # pynetdicom deletes its file after this handler: the blob may be that file.
        staged = stage(fp, source=f"cstore:{session.calling_ae}", adopt=received,
                       held=session.index.held, series_of=session.index.series_of,
                       checksum_later=True,  # hashed by the index thread, in parallel
                       clinics=session.clinics)
    if not isinstance(staged, Staged):
        return staged
    try:
        spooled = spool(received, session.calling_ae, staged.key)
    except BaseException:
        blobs.delete(staged.key)  # not answered for: nothing may stay half-stored
        raise
    session.index.add(staged, spooled)
    return staged.stored()


def handle_store(event: Event, listener: Listener) -> int:
    """EVT_C_STORE: check the peer may store, ingest the received file, answer by name."""
    session = listener.session(event.assoc)
    if session is None:
        return Status.NOT_AUTHORISED
    request = cast("C_STORE", event.request)
    announced = str(request.AffectedSOPInstanceUID or "")
    decision = decide_peer(session.peer, AuditAction.STORE,
                           allow_unknown=listener.allow_unknown_peers)
    if not decision:
        record(AuditAction.STORE, session.actor, Target("instance", announced), Outcome.DENIED,
               reason=decision.why, detail={"operation": "C-STORE"})
        return Status.NOT_AUTHORISED
    if Path(event.dataset_path).stat().st_size > settings.INGEST_MAX_OBJECT_BYTES:
        # Received into a file as it streamed (never into memory), and refused now.
        record(AuditAction.STORE, session.actor, Target("instance", announced),
               Outcome.FAILED, reason=too_large(), detail={"operation": "C-STORE"})
        return Status.STORE_OUT_OF_RESOURCES
    try:
        result = _stage(session, event.dataset_path)
    except Exception:
        # The database or the blob store failed: nothing half-stored (ingest cleans up), and
        # the sender is told to try again rather than that its object is bad.
        log.exception("C-STORE of %s from %s failed", announced, session.calling_ae)
        close_old_connections()  # a broken connection is replaced before the next object
        try:
            record(AuditAction.STORE, session.actor, Target("instance", announced),
                   Outcome.FAILED, reason="the archive could not store the object",
                   detail={"operation": "C-STORE"})
        except Exception:
            log.exception("cannot record the failed C-STORE of %s", announced)
        return Status.STORE_OUT_OF_RESOURCES
    if result.accepted:
        if result.sop_instance_uid != announced:
            log.warning("C-STORE announced %s but the dataset is %s", announced,
                        result.sop_instance_uid)
        if result.outcome == IngestOutcome.DUPLICATE:  # nothing to index
            session.duplicate(result)
    else:
        record(AuditAction.STORE, session.actor,
               Target("instance", result.sop_instance_uid or announced,
                      study_uid=result.study_instance_uid),
               Outcome.FAILED, reason=result.reason,
               detail={"operation": "C-STORE", "result": result.outcome.value})
    return _STATUS[result.outcome]
