"""Receipt access codes: issue one for a patient, redeem it with the birth date, revoke it.

A code (20 characters from :data:`~patients.models.ALPHABET`, printed in groups of four)
plus the patient's birth date signs the patient in to their own exams. Nothing else: the
code opens only accounts made for code sign-ins (no password, patient role), so it can
never stand in for a password or a second factor: a code sign-in to an account whose
patient turned on two-step verification is still asked for the TOTP code
(:func:`accounts.second_factor.required`, enforced by the middleware). An unknown code
and a wrong birth date are refused alike; only someone with both right learns that a code
expired or was revoked.
Every attempt is audited (``LOGIN``), issuing, emailing and revoking too (``SHARE``).
"""

from __future__ import annotations

import datetime
import enum
import logging
import secrets
import smtplib
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import login
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone, translation

from accounts.models import Role, User
from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import policies
from imaging.models import Patient
from imaging.principals import as_principal
from portal.client_address import client_address

from . import throttle
from .models import ALPHABET, GROUP, GROUPS, AccessCode, hash_code, lifetime, normalize

if TYPE_CHECKING:
    from imaging.principals import Caller

log = logging.getLogger(__name__)

# Wrong birth dates typed with one right code before the code stops working for good.
MAX_FAILURES = 10
# A code sign-in lasts this long (seconds), shorter than a staff session.
SESSION_SECONDS = 2 * 3600
# The session remembers which patient the code was for; patient pages show only that one.
SESSION_PATIENT = "patients:code_patient"
SESSION_CODE = "patients:code"
BACKEND = "accounts.backends.EmailOrUsernameBackend"


class Refusal(enum.StrEnum):
    WRONG = "wrong"  # unknown code, or a birth date that does not match: alike on purpose
    EXPIRED = "expired"
    REVOKED = "revoked"
    LOCKED = "locked"  # too many wrong birth dates with this code
    OWN_CODE = "own_code"  # the person who issued the code cannot sign in with it
    HAS_ACCOUNT = "has_account"  # the record belongs to an account with a password
    TOO_MANY = "too_many"  # rate limit


class CodeRefused(Exception):
    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


class NotAllowed(PermissionDenied):
    """Only reception staff (technicians) and admins issue or revoke codes."""


def new_code() -> str:
    """A fresh code for printing, e.g. ``K7QF-9XMZ-...`` (about 97 bits)."""
    chars = "".join(secrets.choice(ALPHABET) for _ in range(GROUP * GROUPS))
    return format_code(chars)


def format_code(code: str) -> str:
    chars = normalize(code)
    return "-".join(chars[i:i + GROUP] for i in range(0, len(chars), GROUP))


def may_issue(by: Caller) -> bool:
    """Whether ``by`` issues codes at all (for some patient of their clinics)."""
    return bool(policies.decide(as_principal(by), policies.Action.ISSUE_CODE))


def issuable_patients(by: Caller) -> QuerySet[Patient]:
    """The patients ``by`` may issue a code for: those of their clinics."""
    from imaging.admin_scope import patients_in_scope

    principal = as_principal(by)
    if not may_issue(principal):
        return Patient.objects.none()
    return patients_in_scope(principal)


def issue_code(patient: Patient, by: Caller, *, actor: Actor | None = None,
               expires_in: datetime.timedelta | None = None) -> tuple[AccessCode, str]:
    """A new code for ``patient``; returns it and the plaintext, shown only this once."""
    principal = as_principal(by)
    actor = actor or Actor.for_user(principal.user)
    decision = policies.decide(principal, policies.Action.ISSUE_CODE, patient)
    if not decision:
        record(AuditAction.SHARE, actor, Target.patient(patient), Outcome.DENIED,
               reason=decision.why, detail={"step": "issue_access_code"})
        raise NotAllowed("may not issue access codes")
    with transaction.atomic():
        code = new_code()
        access = AccessCode.objects.create(
            patient=patient, code_hash=hash_code(code), prefix=normalize(code)[:GROUP],
            created_by_id=principal.user_id,
            expires=timezone.now() + (expires_in or lifetime()),
        )
        record(AuditAction.SHARE, actor, Target.patient(patient), Outcome.ALLOWED,
               detail={"step": "issue_access_code", "code": access.pk,
                       "prefix": access.prefix, "expires": access.expires.isoformat()})
    return access, code


class CodeNotSent(Exception):
    """The mail server refused or could not be reached; the printed receipt still works."""


def display_name(patient: Patient) -> str:
    """``Pereira^Paula`` as a person writes it: ``Paula Pereira``."""
    family, _, rest = patient.name.partition("^")
    return " ".join(part for part in (rest.split("^")[0], family) if part.strip()).strip()


def send_code(patient: Patient, code: str, email: str, portal_url: str,
              expires: datetime.datetime, *, actor: Actor, language: str = "") -> None:
    """Email a just-issued ``code`` to the patient, in words a patient understands.

    The message says what the code is for, where to type it, that the birth date is also
    needed (and never contains it), when the code expires, and that the clinic never asks
    for it by phone. The send is audited with the address, never the code; a failed send
    is audited too and raises :class:`CodeNotSent`.
    """
    with translation.override(language or translation.get_language() or settings.LANGUAGE_CODE):
        body = render_to_string("patients/code_email.txt", {
            "name": display_name(patient), "clinic": patient.clinic, "code": code,
            "portal_url": portal_url, "expires": expires,
        })
        subject = translation.gettext("Your access code to see your exams")
    detail = {"sent": "access code by email", "sent_to": email}
    try:
        send_mail(subject, body, None, [email])
    except (smtplib.SMTPException, OSError) as error:
        log.warning("access code email to patient %s failed: %s", patient.pk, error)
        record(AuditAction.SHARE, actor, Target.patient(patient), Outcome.FAILED,
               reason="email not sent", detail=detail)
        raise CodeNotSent(str(error)) from error
    record(AuditAction.SHARE, actor, Target.patient(patient), Outcome.ALLOWED, detail=detail)


def revoke_code(access: AccessCode, by: Caller, *, actor: Actor | None = None) -> bool:
    """Stop the code now; True if this call revoked it.

    The sessions it opened end at their next request (the policy checks the code on every
    one), and the download links and shares made in them are revoked with it.
    """
    principal = as_principal(by)
    actor = actor or Actor.for_user(principal.user)
    detail = {"step": "revoke_access_code", "code": access.pk, "prefix": access.prefix}
    if not policies.decide(principal, policies.Action.ISSUE_CODE, access.patient):
        record(AuditAction.SHARE, actor, Target.patient(access.patient), Outcome.DENIED,
               reason="may not revoke access codes", detail=detail)
        raise NotAllowed("may not revoke access codes")
    now = timezone.now()
    changed = AccessCode.objects.filter(pk=access.pk, revoked__isnull=True).update(revoked=now)
    if changed:
        from sharing.models import DownloadLink, Share

        for made in (DownloadLink, Share):
            made.objects.filter(access_code=access.pk, revoked__isnull=True).update(
                revoked=now)
        access.revoked = now
        record(AuditAction.SHARE, actor, Target.patient(access.patient), Outcome.ALLOWED,
               detail=detail)
    return bool(changed)


def _ip(request: HttpRequest) -> str:
    return client_address(request)


def _refuse(request: HttpRequest, access: AccessCode | None, reason: Refusal, why: str,
            prefix: str) -> CodeRefused:
    """Audit the refusal and, for guesses, count it against the address and prefix."""
    if reason in (Refusal.WRONG, Refusal.LOCKED):
        throttle.failed(_ip(request), prefix)
    record(AuditAction.LOGIN, Actor.from_request(request),
           Target.patient(access.patient) if access else None,
           Outcome.FAILED if reason == Refusal.EXPIRED else Outcome.DENIED, reason=why,
           detail={"method": "access_code", "prefix": prefix,
                   **({"code": access.pk} if access else {})})
    return CodeRefused(reason)


def _code_only_account(user: User) -> bool:
    """An account made for code sign-ins: a patient without password or staff rights."""
    return (user.role == Role.PATIENT and not user.is_staff and not user.is_superuser
            and not user.has_usable_password())


def _account_for(patient: Patient) -> User:
    """The patient's portal account, created (no password) the first time a code is used."""
    with transaction.atomic():
        locked = Patient.objects.select_for_update().get(pk=patient.pk)
        if locked.user_id is not None:
            return User.objects.get(pk=locked.user_id)
        family, _, given = locked.name.partition("^")
        user = User(username=f"patient-{secrets.token_hex(8)}", role=Role.PATIENT,
                    first_name=given.split("^")[0][:150].strip(), last_name=family[:150].strip())
        user.set_unusable_password()
        user.save()
        Patient.objects.filter(pk=patient.pk).update(user=user)
        patient.user = user
        return user


def redeem(code: str, birth_date: datetime.date | None, request: HttpRequest) -> User:
    """Sign the holder of ``code`` in as its patient, or raise :class:`CodeRefused`.

    The session lasts :data:`SESSION_SECONDS` and remembers the patient, so the portal's
    pages show only that patient's exams.
    """
    chars = normalize(code)
    prefix = chars[:GROUP]
    if throttle.blocked(_ip(request), prefix):
        raise _refuse(request, None, Refusal.TOO_MANY, "too many attempts", prefix)
    access = (AccessCode.objects.select_related("patient__user")
              .filter(code_hash=hash_code(chars)).first() if chars else None)
    if access is None:
        raise _refuse(request, None, Refusal.WRONG, "unknown access code", prefix)
    patient = access.patient
    if birth_date is None or patient.birth_date is None or patient.birth_date != birth_date:
        AccessCode.objects.filter(pk=access.pk).update(failures=F("failures") + 1)
        raise _refuse(request, access, Refusal.WRONG, "wrong birth date", prefix)
    if access.revoked is not None:
        raise _refuse(request, access, Refusal.REVOKED, "access code revoked", prefix)
    if access.expires <= timezone.now():
        raise _refuse(request, access, Refusal.EXPIRED, "access code expired", prefix)
    if access.failures >= MAX_FAILURES:
        raise _refuse(request, access, Refusal.LOCKED, "access code locked", prefix)
    signed_in = getattr(request, "user", None)
    if (signed_in is not None and signed_in.is_authenticated
            and access.created_by_id == signed_in.pk):
        raise _refuse(request, access, Refusal.OWN_CODE,
                      "the person who issued the code tried to sign in with it", prefix)
    user = patient.user
    if user is not None and not (user.is_active and _code_only_account(user)):
        raise _refuse(request, access, Refusal.HAS_ACCOUNT,
                      "record belongs to an account with a password", prefix)
    user = _account_for(patient)
    if not _code_only_account(user):  # linked meanwhile to another kind of account
        raise _refuse(request, access, Refusal.HAS_ACCOUNT,
                      "record belongs to an account with a password", prefix)
    AccessCode.objects.filter(pk=access.pk).update(uses=F("uses") + 1,
                                                   last_used=timezone.now())
    login(request, user, backend=BACKEND)
    request.session[SESSION_PATIENT] = patient.pk
    request.session[SESSION_CODE] = access.pk
    request.session.set_expiry(SESSION_SECONDS)
    record(AuditAction.LOGIN, Actor.from_request(request), Target.patient(patient),
           Outcome.ALLOWED, detail={"method": "access_code", "prefix": prefix,
                                    "code": access.pk})
    return user


def session_patient(request: HttpRequest) -> int | None:
    """The patient a code session is limited to (None for an account sign-in)."""
    session = getattr(request, "session", None)
    value = session.get(SESSION_PATIENT) if session is not None else None
    return int(value) if value is not None else None


def session_code(request: HttpRequest) -> int | None:
    """The access code a session was opened with; -1 for a code session that lost it.

    None means an account sign-in. Older code sessions that did not keep the code are
    treated as ended (the principal they give opens nothing).
    """
    if session_patient(request) is None:
        return None
    value = request.session.get(SESSION_CODE)
    return int(value) if value is not None else -1
