"""STORE entries on the audit trail, for every way objects come in.

Ingest writes the entry for the objects it indexes inside the transaction of their index
rows (:mod:`imaging.ingest`, given a :class:`StoreAudit`): an object is never in the archive
without its entry, even when the process is killed right after its commit. What writes no
index row (a duplicate, a refusal) is recorded after, by the same function.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record

from .models import Study

if TYPE_CHECKING:
    from .ingest import IngestResult
    from .principals import Principal


@dataclass(frozen=True)
class StoreAudit:
    """Who stores, and by which way in (``via``: ``upload``, ``stow-rs``, ``C-STORE``...).

    Also where: ``clinics`` are the clinics the storer acts within (None: any), so an
    object for another clinic's patient is refused; ``clinic_id`` is the clinic a patient
    new to the archive gets (the storer's one clinic, else the installation's only one).
    """

    actor: Actor
    via: str
    clinics: frozenset[int] | None = None
    clinic_id: int | None = None
    #: Who stores, for the policy's decisions beyond storing itself (a rejection note
    #: applies only if its sender may store for the patient: imaging.rejection).
    principal: Principal | None = None

    @classmethod
    def within(cls, actor: Actor, via: str, principal: Principal) -> StoreAudit:
        """For ``principal`` storing: a technician or admin of her clinics, a peer of its."""
        clinics = principal.clinic_ids
        only = next(iter(clinics)) if clinics is not None and len(clinics) == 1 else None
        return cls(actor, via, clinics, only, principal)


def record_stores(actor: Actor, results: Iterable[IngestResult], *, via: str) -> None:
    """Put ingest results on the trail: one entry per study stored into (listing the SOP
    Instance UIDs by outcome), one per refusal."""
    accepted: dict[str, dict[str, list[str]]] = {}
    refused = []
    for result in results:
        if result.accepted:
            by_outcome = accepted.setdefault(result.study_instance_uid, {})
            by_outcome.setdefault(str(result.outcome), []).append(result.sop_instance_uid)
        else:
            refused.append(result)
    studies = {
        s.study_instance_uid: s
        for s in Study.objects.select_related("patient").filter(
            study_instance_uid__in=list(accepted)
        )
    } if accepted else {}
    for study_uid, by_outcome in accepted.items():
        study = studies.get(study_uid)
        target = Target.study(study) if study else Target("study", study_uid,
                                                          study_uid=study_uid)
        record(AuditAction.STORE, actor, target, Outcome.ALLOWED, detail={
            "via": via, "instances": sum(len(u) for u in by_outcome.values()), **by_outcome,
        })
    for result in refused:
        record(AuditAction.STORE, actor,
               Target("instance", result.sop_instance_uid, study_uid=result.study_instance_uid),
               Outcome.FAILED, reason=result.reason,
               detail={"via": via, "result": str(result.outcome)})
