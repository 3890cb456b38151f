"""Who may do what to which patient's data: the one answer, :func:`decide`.

Every read and write path asks here, with a :class:`~imaging.principals.Principal` that
carries its scope; the callers are :mod:`imaging.access` (decide and record) and
:func:`visible_studies` (what a search may return). Nothing else decides.

- Everyone acts within their clinics: clinic admins manage the patients of the clinics they
  belong to, technicians store and issue receipt codes there, doctors see patients they
  hold an active grant for at a clinic they belong to, and write their studies' reports
  (nobody else does, but a platform superuser). A platform superuser is the one exception
  and sees every clinic.
- A doctor outside her grants may open a break-the-glass access to a patient of one of her
  clinics, with a written reason: reads only, marked, reviewed.
- Patients see the records linked to their own account; a receipt-code session sees only
  the code's patient, only while the code is valid, and cannot mint tokens.
- DICOM peers use the services they are allowed, within the clinic they are bound to.
- Sharing outside the care team needs the patient's sharing consent, or, for staff, a
  recorded legal basis chosen from :data:`LEGAL_BASES`; whoever shares.

Decisions only; recording them is ``imaging.access``'s job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import AccessGrant, BreakGlassAccess, Purpose, Role
from privacy.consent import has_consent

from .models import Patient, Study
from .principals import Kind, Principal, as_principal

if TYPE_CHECKING:
    from django.utils.functional import _StrPromise

    from .principals import Caller


class Action(enum.StrEnum):
    """What a principal asks to do. Values match ``audit.AuditAction`` where both exist."""

    VIEW = "view"
    SEARCH = "search"
    DOWNLOAD = "download"
    RETRIEVE = "retrieve"
    STORE = "store"
    SHARE = "share"
    EXPORT = "export"
    DELETE = "delete"
    BREAK_GLASS = "break_glass"
    ASSOCIATION = "association"
    ISSUE_CODE = "issue_code"
    MANAGE_LINK = "manage_link"
    MINT_TOKEN = "mint_token"  # noqa: S105 (an action name)
    BROWSE = "browse"  # has an archive to look at at all
    REPORT = "report"  # write the study's report (a preliminary, a final, an amendment)
    # Add a structured report (a viewer's measurements, DICOM SR) to an existing study.
    ADD_REPORT = "add_report"


READS = frozenset({Action.VIEW, Action.SEARCH, Action.DOWNLOAD, Action.RETRIEVE})
#: What a patient (own account or code session) may do to their own records.
PATIENT_ACTIONS = READS | {Action.SHARE, Action.EXPORT, Action.MANAGE_LINK, Action.BROWSE}
#: What a doctor's active grant allows.
GRANT_ACTIONS = READS | {Action.SHARE, Action.MANAGE_LINK, Action.BROWSE, Action.REPORT,
                         Action.ADD_REPORT}
ADMIN_ACTIONS = READS | {Action.STORE, Action.SHARE, Action.EXPORT, Action.DELETE,
                         Action.ISSUE_CODE, Action.MANAGE_LINK, Action.BROWSE,
                         Action.ADD_REPORT}
TECHNICIAN_ACTIONS = frozenset({Action.STORE, Action.ISSUE_CODE})
#: A platform superuser may also write reports (a superuser doctor); admins as such may not.
SUPERUSER_ACTIONS = ADMIN_ACTIONS | {Action.REPORT}
PEER_FLAGS = {Action.STORE: "may_store", Action.SEARCH: "may_query",
              Action.RETRIEVE: "may_retrieve"}

#: Legal bases (LGPD art. 7 and 11) staff may record for sharing without the patient's
#: sharing consent; each needs a written reason.
LEGAL_BASES: dict[str, _StrPromise] = {
    "health_protection": _("health protection, by a health professional (art. 11, II, f)"),
    "life_protection": _("protection of the life or safety of the patient (art. 11, II, e)"),
    "legal_obligation": _("legal or regulatory obligation (art. 11, II, a)"),
    "court_order": _("exercise of rights in legal proceedings (art. 11, II, d)"),
}
MIN_BASIS_REASON = 15
NO_CONSENT = "no sharing consent"
#: Why a legal basis was not accepted, in words for the person sharing.
BASIS_PROBLEMS: dict[str, _StrPromise] = {
    "only clinic staff may share on a legal basis":
        _("Only clinic staff may share on a legal basis."),
    "unknown legal basis": _("Choose a legal basis from the list."),
    "a legal basis needs a written reason":
        _("Write the reason for the legal basis (at least 15 characters)."),
}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    break_glass: bool = False
    why: str = ""
    #: SHARE: what the share rests on ("consent" or a :data:`LEGAL_BASES` key).
    basis: str = ""
    #: Platform-wide: allowed by the superuser exception to clinic scoping.
    platform: bool = False

    def __bool__(self) -> bool:
        return self.allowed


def _no(why: str) -> Decision:
    return Decision(False, why=why)


# --- what a principal sees ---------------------------------------------------------------


def _in_clinics(principal: Principal, prefix: str = "") -> Q:
    clinics = principal.clinic_ids
    if clinics is None:
        return Q()
    return Q(**{f"{prefix}clinic_id__in": sorted(clinics)})


def _granted(user_id: int) -> Q:
    now = timezone.now()
    grants = AccessGrant.objects.filter(
        AccessGrant.active_q(now=now), doctor_id=user_id, patient_id=OuterRef("pk"),
        clinic__members=user_id,
    )
    glass = BreakGlassAccess.objects.filter(
        doctor_id=user_id, patient_id=OuterRef("pk"), opened__lte=now, expires__gt=now
    )
    return Q(Exists(grants)) | Q(Exists(glass))


def visible_patients(caller: Caller) -> QuerySet[Patient]:
    """The patients ``caller`` may see; outsiders get an empty set, never an error.

    ``caller`` is a :class:`Principal`, or an account taken as a password sign-in.
    """
    principal = as_principal(caller)
    patients = Patient.objects.all()
    if principal.kind == Kind.ANONYMOUS:
        return patients.none()
    if principal.kind == Kind.PEER:
        if not _peer_reads(principal):
            return patients.none()
        return patients.filter(_in_clinics(principal))
    user = principal.user
    assert user is not None
    if principal.kind == Kind.CODE:
        return patients.filter(pk=principal.patient_id or 0, user=user.pk)
    if principal.is_superuser:
        return patients
    role = principal.role
    if role == Role.ADMIN:
        return patients.filter(_in_clinics(principal))
    if role == Role.DOCTOR:
        return patients.filter(_granted(user.pk))
    if role == Role.PATIENT:
        return patients.filter(user=user.pk)
    return patients.none()


def visible_studies(caller: Caller) -> QuerySet[Study]:
    """The studies ``caller`` may find: :func:`visible_patients`'s, as one query."""
    principal = as_principal(caller)
    studies = Study.objects.select_related("patient")
    if principal.kind == Kind.ANONYMOUS:
        return studies.none()
    if principal.kind == Kind.PEER:
        if not _peer_reads(principal):
            return studies.none()
        return studies.filter(_in_clinics(principal, "patient__"))
    if principal.is_superuser:
        return studies
    if principal.kind != Kind.CODE and principal.role == Role.ADMIN:
        return studies.filter(_in_clinics(principal, "patient__"))
    if principal.kind != Kind.CODE and principal.role == Role.DOCTOR:
        assert principal.user_id is not None
        return studies.filter(_granted_ids(principal.user_id))
    return studies.filter(patient__in=visible_patients(principal).values("pk"))


def _granted_ids(user_id: int) -> Q:
    """:func:`_granted` as one uncorrelated list of patients: the same patients, but a
    search over 100,000 studies joins a short list instead of running both EXISTS for
    every patient it meets (250 ms against 10, bench/worklist_search.py)."""
    now = timezone.now()
    grants = AccessGrant.objects.filter(
        AccessGrant.active_q(now=now), doctor_id=user_id, clinic__members=user_id,
    ).order_by().values("patient_id")
    glass = BreakGlassAccess.objects.filter(
        doctor_id=user_id, opened__lte=now, expires__gt=now
    ).order_by().values("patient_id")
    return Q(patient_id__in=grants.union(glass))


def _peer_reads(principal: Principal) -> bool:
    peer = principal.peer
    return bool(peer and peer.enabled and (peer.may_query or peer.may_retrieve))


# --- the decision ------------------------------------------------------------------------


def decide(caller: Caller, action: str, patient: Patient | None = None, *,
           outside: bool = True, legal_basis: str = "", basis_reason: str = "",
           owner_id: int | None = None) -> Decision:
    """May ``caller`` do ``action`` (to ``patient``'s data, where there is one)?

    ``caller`` is a :class:`Principal`, or an account taken as a password sign-in.

    ``SHARE`` with ``outside`` (someone outside the care team receives it) also needs the
    patient's sharing consent now, or a staff member's ``legal_basis`` with a reason;
    the decision says which in ``basis``. ``MANAGE_LINK`` is allowed to the link's
    creator (``owner_id``) as long as she is still signed in as herself.
    """
    act = Action(action)
    principal = as_principal(caller)
    if principal.kind == Kind.ANONYMOUS:
        return _no("not signed in")
    if principal.kind == Kind.PEER:
        return _decide_peer(principal, act, patient)
    user = principal.user
    assert user is not None
    if act == Action.MINT_TOKEN:
        return _may_mint_token(principal)
    if act == Action.MANAGE_LINK and owner_id is not None and owner_id == user.pk:
        return Decision(True)
    if act == Action.BROWSE:
        return _may_browse(principal)
    if patient is None:
        return _without_patient(principal, act)
    decision = _for_patient(principal, act, patient)
    if decision and act == Action.SHARE:
        return _share_basis(principal, patient, decision, outside=outside,
                            legal_basis=legal_basis, basis_reason=basis_reason)
    return decision


def _within(principal: Principal, patient: Patient) -> bool:
    clinics = principal.clinic_ids
    return clinics is None or patient.clinic_id in clinics


def _for_patient(principal: Principal, act: Action, patient: Patient) -> Decision:
    user = principal.user
    assert user is not None
    if principal.kind == Kind.CODE:
        own = patient.pk == principal.patient_id and patient.user_id == user.pk
        if not own:
            return _no("outside this access code's patient")
        return Decision(act in PATIENT_ACTIONS,
                        why="" if act in PATIENT_ACTIONS else f"a code session may not {act}")
    role = principal.role
    if principal.is_superuser:
        allowed = act in SUPERUSER_ACTIONS
        return Decision(allowed, platform=True, why="" if allowed else f"nobody may {act}")
    if role == Role.ADMIN:
        if not _within(principal, patient):
            return _no("patient of another clinic")
        return Decision(act in ADMIN_ACTIONS, why="" if act in ADMIN_ACTIONS
                        else f"admins may not {act}")
    if role == Role.TECHNICIAN:
        if act not in TECHNICIAN_ACTIONS:
            return _no("technicians bring images in but do not browse")
        if not _within(principal, patient):
            return _no("patient of another clinic")
        return Decision(True)
    if role == Role.PATIENT:
        if patient.user_id != user.pk:
            return _no("not the patient's own record")
        return Decision(act in PATIENT_ACTIONS,
                        why="" if act in PATIENT_ACTIONS else f"patients may not {act}")
    if role == Role.DOCTOR:
        return _for_doctor(principal, act, patient)
    return _no("role has no access to patient data")


def _for_doctor(principal: Principal, act: Action, patient: Patient) -> Decision:
    user_id = principal.user_id
    now = timezone.now()
    if act == Action.BREAK_GLASS:
        if patient.clinic_id is None or not _within(principal, patient):
            return _no("patient of another clinic")
        return Decision(True)
    # Grant and open break-the-glass access asked together: one query whichever applies.
    found = Patient.objects.filter(pk=patient.pk).annotate(
        granted=Exists(AccessGrant.objects.filter(
            AccessGrant.active_q(now=now), doctor_id=user_id, patient_id=patient.pk,
            clinic__members=user_id)),
        glass=Exists(BreakGlassAccess.objects.filter(
            doctor_id=user_id, patient_id=patient.pk, opened__lte=now, expires__gt=now)),
    ).values_list("granted", "glass").first()
    granted, glass = found or (False, False)
    if granted:
        return Decision(act in GRANT_ACTIONS,
                        why="" if act in GRANT_ACTIONS else f"doctors may not {act}")
    if glass and act in READS:
        return Decision(True, break_glass=True)
    return _no("no care relationship or grant for this patient")


def _without_patient(principal: Principal, act: Action) -> Decision:
    """Actions asked before there is a patient: may this principal store at all, etc."""
    if act == Action.STORE:
        if principal.kind == Kind.CODE:
            return _no("a code session may not store")
        ok = principal.is_superuser or principal.role in (Role.ADMIN, Role.TECHNICIAN)
        return Decision(ok, why="" if ok else "may not store")
    if act == Action.ADD_REPORT:
        # Which study is asked per object (decide with its patient); here: may at all.
        ok = principal.kind != Kind.CODE and (
            principal.is_superuser or principal.role in (Role.ADMIN, Role.DOCTOR))
        return Decision(ok, why="" if ok else "may not add reports")
    if act == Action.ISSUE_CODE:
        ok = principal.kind != Kind.CODE and (
            principal.is_superuser or principal.role in (Role.ADMIN, Role.TECHNICIAN))
        return Decision(ok, why="" if ok else "may not issue access codes")
    if act == Action.BREAK_GLASS:
        ok = principal.kind != Kind.CODE and principal.role == Role.DOCTOR
        return Decision(ok, why="" if ok else "only doctors may break the glass")
    if act == Action.DELETE:
        ok = principal.kind == Kind.USER and (principal.is_superuser
                                              or principal.role == Role.ADMIN)
        return Decision(ok, why="" if ok else "only admins purge")
    return _no(f"{act} needs a patient")


def _may_browse(principal: Principal) -> Decision:
    if principal.kind == Kind.CODE or principal.is_superuser:
        return Decision(True)
    ok = principal.role in (Role.ADMIN, Role.DOCTOR, Role.PATIENT)
    return Decision(ok, why="" if ok else "role has no archive to browse")


def _may_mint_token(principal: Principal) -> Decision:
    """Tokens are for staff and for patients with a password and a second factor."""
    if principal.kind != Kind.USER:
        return _no("only a password sign-in may create API tokens")
    user = principal.user
    assert user is not None
    if principal.role != Role.PATIENT or user.is_staff or user.is_superuser:
        return Decision(True)
    from accounts import second_factor

    if not user.has_usable_password():
        return _no("patients need a password to create API tokens")
    if second_factor.confirmed_device(user) is None:
        return _no("patients need a second factor to create API tokens")
    return Decision(True)


def may_share_on_legal_basis(principal: Principal) -> bool:
    """Clinic staff signed in as themselves (admins, doctors, superusers); not patients."""
    return principal.is_superuser or (principal.kind == Kind.USER
                                      and principal.role in (Role.ADMIN, Role.DOCTOR))


def _share_basis(principal: Principal, patient: Patient, decision: Decision, *,
                 outside: bool, legal_basis: str, basis_reason: str) -> Decision:
    if not outside:
        return decision
    if has_consent(patient, Purpose.SHARING):
        return Decision(True, basis="consent", platform=decision.platform)
    if not legal_basis:
        return _no(NO_CONSENT)
    if not may_share_on_legal_basis(principal):
        return _no("only clinic staff may share on a legal basis")
    if legal_basis not in LEGAL_BASES:
        return _no("unknown legal basis")
    if len(basis_reason.strip()) < MIN_BASIS_REASON:
        return _no("a legal basis needs a written reason")
    return Decision(True, basis=legal_basis, platform=decision.platform)


def _decide_peer(principal: Principal, act: Action, patient: Patient | None) -> Decision:
    peer = principal.peer
    assert peer is not None
    if not peer.known and not peer.enabled:
        return _no("calling AE title and host are not a known peer")
    if not peer.enabled:
        return _no("peer is disabled")
    if act == Action.ASSOCIATION:
        return Decision(True, why="" if peer.known else
                        "unknown peer allowed by DICOM_ALLOW_UNKNOWN_PEERS")
    flag = PEER_FLAGS.get(act)
    if flag is None:
        return _no(f"peers may not {act}")
    if not getattr(peer, flag):
        return _no(f"peer may not {act}")
    if patient is not None and not _within(principal, patient):
        return _no("patient of another clinic than the peer's")
    return Decision(True)
