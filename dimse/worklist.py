"""Modality Worklist C-FIND on the listener: the DIMSE side of :mod:`orders.worklist`.

C-FIND requests of the other information models go on to :func:`dimse.find.handle_find`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from pydicom.dataset import Dataset

from audit.models import AuditAction, Outcome
from audit.trail import Target, record
from orders import worklist

from . import find
from .policies import decide_peer, principal_for
from .sop_classes import MODALITY_WORKLIST_FIND
from .statuses import Status

if TYPE_CHECKING:
    from pynetdicom.dimse_primitives import C_FIND
    from pynetdicom.events import Event

    from .handlers import Listener

log = logging.getLogger(__name__)


def handle_find(event: Event, listener: Listener) -> Iterator[tuple[int, Dataset | None]]:
    """EVT_C_FIND: worklist queries here, the others to :mod:`dimse.find`."""
    request = cast("C_FIND", event.request)
    if str(request.AffectedSOPClassUID) != MODALITY_WORKLIST_FIND:
        yield from find.handle_find(event, listener)
        return
    session = listener.session(event.assoc)
    decision = decide_peer(session.peer if session else None, AuditAction.SEARCH,
                           allow_unknown=listener.allow_unknown_peers)
    if session is None or not decision:
        if session is not None:
            record(AuditAction.SEARCH, session.actor, None, Outcome.DENIED,
                   reason=decision.why, detail={"operation": "MWL C-FIND"})
        yield Status.NOT_AUTHORISED, None
        return
    principal = principal_for(session.peer, allow_unknown=listener.allow_unknown_peers)
    try:
        found = list(worklist.answers(principal, event.identifier))
    except worklist.WorklistError as exc:
        record(AuditAction.SEARCH, session.actor, None, Outcome.FAILED, reason=str(exc),
               detail={"operation": "MWL C-FIND"})
        yield Status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
        return
    patients = {p.patient_id: p.patient for p, _ in found}
    record(AuditAction.SEARCH, session.actor,
           [Target.patient(p) for p in patients.values()] or None, Outcome.ALLOWED,
           detail={"operation": "MWL C-FIND", "hits": len(found)})
    for _, answer in found:
        if event.is_cancelled:
            yield Status.CANCEL, None
            return
        yield Status.PENDING, answer
    yield Status.SUCCESS, None
