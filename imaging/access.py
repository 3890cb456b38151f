"""Policy plus audit, for every path to patient data: pages, admin, DICOMweb, DIMSE,
downloads, shares.

``authorize`` asks :func:`imaging.policies.decide` for a
:class:`~imaging.principals.Principal` and writes the one audit entry; callers turn a
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
from .principals import as_principal

if TYPE_CHECKING:
    from .principals import Caller

ArchiveObject = Patient | Study | Series | Instance


def patient_of(obj: ArchiveObject) -> Patient:
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
    caller: Caller, actor: Actor, action: AuditAction, obj: ArchiveObject,
    *, detail: dict[str, Any] | None = None, session: bool = False,
) -> policies.Decision:
    """Decide and record. The caller must refuse (404) when the decision says no.

    With ``session``, an allowed read (not break-the-glass) is counted on the caller's
    viewing session of the study (``audit.read_sessions``) rather than chained on its own.
    """
    decision = policies.decide(caller, action, patient_of(obj))
    if session and decision.allowed and not decision.break_glass:
        read_sessions.record_read(action, actor, target_of(obj), reason=decision.why,
                                  detail=detail)
        return decision
    extra = dict(detail or {})
    if decision.platform:
        extra["platform_wide"] = True
    record(
        action, actor, target_of(obj),
        Outcome.ALLOWED if decision.allowed else Outcome.DENIED,
        reason=decision.why, break_glass=decision.break_glass, detail=extra,
    )
    return decision



def get_or_404(
    caller: Caller, actor: Actor, action: AuditAction, level: str, uid: str,
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
    if not authorize(caller, actor, action, obj, session=session):
        raise Http404
    return obj


def patient_or_404(caller: Caller, actor: Actor, action: AuditAction, pk: int) -> Patient:
    """The patient with primary key ``pk`` if ``caller`` may ``action`` it, else 404;
    :func:`get_or_404` for pages addressed by patient (the timeline)."""
    patient = Patient.objects.filter(pk=pk).first()
    if patient is None:
        # Not as the target's patient_pk: a later patient could be given that key.
        record(action, actor, Target(level="patient"), Outcome.FAILED,
               reason="no such object", detail={"patient_pk": pk})
        raise Http404
    if not authorize(caller, actor, action, patient):
        raise Http404
    return patient


def record_search(
    actor: Actor, studies: Iterable[Study], *, query: dict[str, Any] | None = None,
    action: AuditAction = AuditAction.SEARCH, session: bool = False,
) -> None:
    """One entry per patient whose studies a search returned (one saying so when nothing
    matched).

    With ``session`` (a search inside one study: its series, its instances, as a viewer
    asks before the frames), hits that all lie in one study are counted on the caller's
    viewing session of that study (``audit.read_sessions``) instead of chained each.
    """
    by_patient: dict[int, tuple[Study, list[str]]] = {}
    for study in studies:
        entry = by_patient.setdefault(study.patient_id, (study, []))
        entry[1].append(study.study_instance_uid)
    if session and len(by_patient) == 1:
        ((study, uids),) = by_patient.values()
        if set(uids) == {study.study_instance_uid}:
            read_sessions.record_read(action, actor, Target.study(study),
                                      detail={"query": query or {}, "hits": len(uids)})
            return
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


def break_the_glass(caller: Caller, actor: Actor, patient: Patient, reason: str) -> None:
    """Open an emergency access to ``patient`` for a doctor, with a written reason.

    Only for a patient of one of the doctor's clinics. The access is allowed for a few
    hours, every use is marked in the trail, and the admin reviews it
    (accounts.BreakGlassAccess in admin).
    """
    from datetime import timedelta

    from django.utils import timezone

    from accounts.models import BreakGlassAccess

    reason = reason.strip()
    principal = as_principal(caller)
    decision = policies.decide(principal, policies.Action.BREAK_GLASS, patient)
    if not decision:
        record(AuditAction.BREAK_GLASS, actor, Target.patient(patient), Outcome.DENIED,
               reason=decision.why)
        raise BreakGlassRefused(decision.why)
    if len(reason) < MIN_REASON_LENGTH:
        raise BreakGlassRefused(
            f"write the clinical reason (at least {MIN_REASON_LENGTH} characters)"
        )
    assert principal.user is not None  # only doctors get here
    now = timezone.now()
    BreakGlassAccess.objects.create(
        doctor=principal.user, patient=patient, reason=reason, opened=now,
        expires=now + timedelta(hours=BREAK_GLASS_HOURS),
    )
    record(AuditAction.BREAK_GLASS, actor, Target.patient(patient), Outcome.ALLOWED,
           reason=reason, break_glass=True)
