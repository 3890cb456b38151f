"""Modality Performed Procedure Step N-CREATE and N-SET on the listener: the DIMSE side of
:mod:`orders.mpps`.

A peer reports procedure steps with the STORE right (``may_store``): the modality that
sends an order's images is the one that says it performed it, and a bound peer reports only
on its clinic's orders. Every request is on the audit trail as a STORE, with the operation.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from pydicom.dataset import Dataset

from audit.models import AuditAction, Outcome
from audit.trail import Target, record
from orders import mpps
from orders.models import PerformedProcedureStep

from .policies import decide_peer, principal_for
from .statuses import Status

if TYPE_CHECKING:
    from collections.abc import Callable

    from pynetdicom.dimse_primitives import N_CREATE, N_SET
    from pynetdicom.events import Event

    from imaging.principals import Principal

    from .handlers import Listener

    #: The operation, given the principal and the calling AE title.
    Operation = Callable[[Principal, str], PerformedProcedureStep]

log = logging.getLogger(__name__)

_STATUS = {
    "invalid": Status.INVALID_ATTRIBUTE_VALUE,
    "duplicate": Status.DUPLICATE_SOP_INSTANCE,
    "no_such_instance": Status.NO_SUCH_OBJECT_INSTANCE,
    # PS3.4 F.7.2.2 (Table F.7.2-2): 0110 "Processing failure", Error Comment "Performed
    # Procedure Step Object may no longer be updated", Error ID A710.
    "final": Status.PROCESSING_FAILURE,
    "not_allowed": Status.NOT_AUTHORISED,
}


#: PS3.4 Table F.7.2-2: the Error ID of "may no longer be updated".
NO_LONGER_UPDATABLE_ERROR_ID = 0xA710


def _failure(status: int, comment: str, error_id: int | None = None) -> Dataset:
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]  # LO
    if error_id is not None:
        answer.ErrorID = error_id
    return answer


def _targets(step: PerformedProcedureStep) -> list[Target] | None:
    order = step.procedure
    return [Target.patient(order.patient)] if order is not None else None


def _serve(event: Event, listener: Listener, operation: str, uid: str,
           run: Operation) -> tuple[int | Dataset, Dataset | None]:
    session = listener.session(event.assoc)
    peer = session.peer if session else None
    decision = decide_peer(peer, AuditAction.STORE, allow_unknown=listener.allow_unknown_peers)
    detail = {"operation": operation, "sop_instance_uid": uid}
    if session is None or not decision:
        if session is not None:
            record(AuditAction.STORE, session.actor, None, Outcome.DENIED,
                   reason=decision.why, detail=detail)
        return _failure(Status.NOT_AUTHORISED, decision.why or "not authorised"), None
    principal = principal_for(peer, allow_unknown=listener.allow_unknown_peers)
    try:
        step = run(principal, session.calling_ae)
    except mpps.MppsError as exc:
        outcome = Outcome.DENIED if exc.kind == "not_allowed" else Outcome.FAILED
        record(AuditAction.STORE, session.actor, None, outcome, reason=str(exc),
               detail=detail)
        log.info("%s %s from %s refused: %s", operation, uid, session.calling_ae, exc)
        error_id = NO_LONGER_UPDATABLE_ERROR_ID if exc.kind == "final" else None
        return _failure(_STATUS[exc.kind], str(exc), error_id), None
    except Exception:
        log.exception("%s %s from %s failed", operation, uid, session.calling_ae)
        return _failure(Status.PROCESSING_FAILURE, "the archive could not record it"), None
    record(AuditAction.STORE, session.actor, _targets(step), Outcome.ALLOWED,
           detail={**detail, "status": step.status,
                   "accession_number": step.accession_number,
                   "order": step.procedure_id})
    return Status.SUCCESS, Dataset()


def handle_create(event: Event, listener: Listener) -> tuple[int | Dataset, Dataset | None]:
    """EVT_N_CREATE: a modality starts a performed procedure step."""
    request = cast("N_CREATE", event.request)
    uid = str(request.AffectedSOPInstanceUID or "")
    return _serve(event, listener, "MPPS N-CREATE", uid,
                  lambda principal, calling: mpps.create(
                      principal, uid, event.attribute_list, calling_ae=calling))


def handle_set(event: Event, listener: Listener) -> tuple[int | Dataset, Dataset | None]:
    """EVT_N_SET: a modality completes, discontinues or updates a step."""
    request = cast("N_SET", event.request)
    uid = str(request.RequestedSOPInstanceUID or "")
    return _serve(event, listener, "MPPS N-SET", uid,
                  lambda principal, calling: mpps.update(
                      principal, uid, event.modification_list, calling_ae=calling))
