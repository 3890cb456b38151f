"""Who may do what to which patient's data. Every read and write path asks here.

- Clinic admins manage the clinic and see its archive.
- Doctors see the patients they hold an active grant for (care relationship or explicit
  grant, at a clinic they belong to), and, outside their grants, a patient for whom they
  opened a break-the-glass access with a written reason (allowed, marked, reviewed).
- Patients see only the records linked to their own account.
- Technicians bring images in but do not browse the archive.

Decisions only; recording them is ``imaging.access``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from accounts.models import AccessGrant, BreakGlassAccess, Role
from audit.models import AuditAction

from .models import Patient, Study

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from accounts.models import User

    AnyUser = User | AnonymousUser

READ_ACTIONS = {
    AuditAction.VIEW, AuditAction.SEARCH, AuditAction.DOWNLOAD, AuditAction.RETRIEVE,
}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    break_glass: bool = False
    why: str = ""

    def __bool__(self) -> bool:
        return self.allowed


def _active(user: AnyUser) -> bool:
    return bool(user.is_authenticated and user.is_active)


def _role(user: AnyUser) -> str:
    return str(getattr(user, "role", ""))


def is_admin(user: AnyUser) -> bool:
    return _active(user) and bool(user.is_superuser or _role(user) == Role.ADMIN)


def may_ingest(user: AnyUser) -> bool:
    return _active(user) and bool(user.is_superuser or _role(user) in (Role.ADMIN,
                                                                        Role.TECHNICIAN))


def may_browse(user: AnyUser) -> bool:
    """Whether the user has an archive to look at at all (technicians do not)."""
    return _active(user) and (is_admin(user) or _role(user) in (Role.DOCTOR, Role.PATIENT))


def _granted(user: AnyUser) -> Q:
    now = timezone.now()
    grants = AccessGrant.objects.filter(
        AccessGrant.active_q(now=now),
        doctor_id=user.pk,
        patient_id=OuterRef("pk"),
        clinic__members=user.pk,
    )
    glass = BreakGlassAccess.objects.filter(
        doctor_id=user.pk, patient_id=OuterRef("pk"), opened__lte=now, expires__gt=now
    )
    return Q(Exists(grants)) | Q(Exists(glass))


def visible_patients(user: AnyUser) -> QuerySet[Patient]:
    """The patients ``user`` may see; outsiders get an empty set, never an error."""
    patients = Patient.objects.all()
    if not _active(user):
        return patients.none()
    if is_admin(user):
        return patients
    role = _role(user)
    if role == Role.DOCTOR:
        return patients.filter(_granted(user))
    if role == Role.PATIENT:
        return patients.filter(user=user.pk)
    return patients.none()


def visible_studies(user: AnyUser) -> QuerySet[Study]:
    studies = Study.objects.select_related("patient")
    if not _active(user):
        return studies.none()
    if is_admin(user):
        return studies
    return studies.filter(patient__in=visible_patients(user).values("pk"))


def decide(user: AnyUser, action: str, patient: Patient) -> Decision:
    """May ``user`` do ``action`` to ``patient``'s data?"""
    if not _active(user):
        return Decision(False, why="not signed in")
    role = _role(user)
    if action == AuditAction.STORE:
        return Decision(may_ingest(user), why="" if may_ingest(user) else "may not store")
    if action == AuditAction.DELETE:
        return Decision(is_admin(user), why="" if is_admin(user) else "only admins purge")
    if is_admin(user):
        return Decision(True)
    if role == Role.PATIENT:
        own = patient.user_id == user.pk
        return Decision(own, why="" if own else "not the patient's own record")
    if role == Role.DOCTOR:
        now = timezone.now()
        granted = AccessGrant.objects.filter(
            AccessGrant.active_q(now=now), doctor_id=user.pk, patient_id=patient.pk,
            clinic__members=user.pk,
        ).exists()
        if granted:
            return Decision(True)
        glass = BreakGlassAccess.objects.filter(
            doctor_id=user.pk, patient_id=patient.pk, opened__lte=now, expires__gt=now
        ).exists()
        if glass and action in READ_ACTIONS:
            return Decision(True, break_glass=True)
        return Decision(False, why="no care relationship or grant for this patient")
    return Decision(False, why="role has no access to patient data")
