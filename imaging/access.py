"""Policy plus audit, for every read path: pages, DICOMweb, downloads.

``authorize`` asks :mod:`imaging.policies` and writes the one audit entry; callers turn a
refusal into a 404 so that existence never leaks. Searches record one entry per patient
whose studies were returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.http import Http404

from audit import read_sessions
from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record

from . import policies
from .models import Instance, Patient, Series, Study

if TYPE_CHECKING:
    from .policies import AnyUser

ArchiveObject = Patient | Study | Series | Instance


def _patient_of(obj: ArchiveObject) -> Patient:
    if isinstance(obj, Patient):
        return obj
    if isinstance(obj, Study):
        return obj.patient
    if isinstance(obj, Series):
        return obj.study.patient
    return obj.series.study.patient


def target_of(obj: ArchiveObject) -> Target:
    if isinstance(obj, Patient):
        return Target.patient(obj)
    if isinstance(obj, Study):
        return Target.study(obj)
    if isinstance(obj, Series):
        return Target.series(obj)
    return Target.instance(obj)


def authorize(
    user: AnyUser, actor: Actor, action: AuditAction, obj: ArchiveObject,
    *, detail: dict[str, Any] | None = None, session: bool = False,
) -> policies.Decision:
    """Decide and record. The caller must refuse (404) when the decision says no.

    With ``session``, an allowed read (not break-the-glass) is counted on the caller's
    viewing session of the study (``audit.read_sessions``) rather than chained on its own.
    """
    decision = policies.decide(user, action, _patient_of(obj))
    if session and decision.allowed and not decision.break_glass:
        read_sessions.record_read(action, actor, target_of(obj), reason=decision.why,
                                  detail=detail)
        return decision
    record(
        action, actor, target_of(obj),
        Outcome.ALLOWED if decision.allowed else Outcome.DENIED,
        reason=decision.why, break_glass=decision.break_glass, detail=detail,
    )
    return decision


def get_or_404(
    user: AnyUser, actor: Actor, action: AuditAction, level: str, uid: str,
    *, session: bool = False,
) -> ArchiveObject:
    """The study, series or instance with ``uid`` if ``user`` may ``action`` it, else 404.

    Unknown UIDs and refused ones look the same to the caller; both are on the record.
    """
    obj: ArchiveObject | None
    if level == "study":
        obj = Study.objects.select_related("patient").filter(study_instance_uid=uid).first()
    elif level == "series":
        obj = (Series.objects.select_related("study__patient")
               .filter(series_instance_uid=uid).first())
    elif level == "instance":
        obj = (Instance.objects.select_related("series__study__patient")
               .filter(sop_instance_uid=uid).first())
    else:
        raise ValueError(level)
    if obj is None:
        record(action, actor, Target(level=level, uid=uid), Outcome.FAILED,
               reason="no such object")
        raise Http404
    if not authorize(user, actor, action, obj, session=session):
        raise Http404
    return obj


def record_search(
    actor: Actor, studies: Iterable[Study], *, query: dict[str, Any] | None = None,
    action: AuditAction = AuditAction.SEARCH,
) -> None:
    """One entry per patient whose studies a search returned (none when nothing matched)."""
    by_patient: dict[int, tuple[Study, list[str]]] = {}
    for study in studies:
        entry = by_patient.setdefault(study.patient_id, (study, []))
        entry[1].append(study.study_instance_uid)
    targets = [
        Target("patient", study.patient.patient_id, study.patient_id,
               Target.study(study).patient_ref)
        for study, _ in by_patient.values()
    ]
    if not targets:
        record(action, actor, None, Outcome.ALLOWED, detail={"query": query or {}, "hits": 0})
        return
    record(action, actor, targets, Outcome.ALLOWED,
           detail={"query": query or {}, "hits": sum(len(u) for _, u in by_patient.values())})


class BreakGlassRefused(ValueError):
    """Why an emergency access could not be opened, in words for the doctor."""


BREAK_GLASS_HOURS = 4
MIN_REASON_LENGTH = 15


def break_the_glass(user: AnyUser, actor: Actor, patient: Patient, reason: str) -> None:
    """Open an emergency access to ``patient`` for a doctor, with a written reason.

    The access is allowed for a few hours, every use is marked in the trail, and the
    admin reviews it (accounts.BreakGlassAccess in admin).
    """
    from datetime import timedelta

    from django.utils import timezone

    from accounts.models import BreakGlassAccess, Role

    reason = reason.strip()
    if not user.is_authenticated or getattr(user, "role", "") != Role.DOCTOR:
        record(AuditAction.BREAK_GLASS, actor, Target.patient(patient), Outcome.DENIED,
               reason="only doctors may break the glass")
        raise BreakGlassRefused("only doctors may break the glass")
    if len(reason) < MIN_REASON_LENGTH:
        raise BreakGlassRefused(
            f"write the clinical reason (at least {MIN_REASON_LENGTH} characters)"
        )
    now = timezone.now()
    BreakGlassAccess.objects.create(
        doctor_id=user.pk, patient=patient, reason=reason, opened=now,
        expires=now + timedelta(hours=BREAK_GLASS_HOURS),
    )
    record(AuditAction.BREAK_GLASS, actor, Target.patient(patient), Outcome.ALLOWED,
           reason=reason, break_glass=True)


def record_stores(actor: Actor, results: Iterable[Any], *, via: str) -> None:
    """Put ingest results on the trail: one entry per study stored into, one per refusal.

    ``results`` are ``imaging.ingest.IngestResult``; entry points that ingest many objects
    at once (upload, import) call this once per batch rather than once per object.
    """
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
    }
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
