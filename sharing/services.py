"""Download links and shares with outside professionals: create, resolve, count, revoke.

Who may share a study is :func:`imaging.policies.decide` with ``SHARE`` (a patient only
their own records; a doctor per grant; admins within their clinics). Sharing outside the
care team (a share with a professional, a link mailed to another address than the
patient's) needs the patient's sharing consent, or a legal basis staff choose with a
reason; whoever shares. The same decision is taken again, for the person who made the link,
at every use: a link stops when its maker's grant ends, when the consent it rests on is
revoked, or when the access code it was made with is. Every creation, use, refusal and
revocation goes to the audit trail (``SHARE`` for giving and taking back access,
``DOWNLOAD``/``VIEW`` for using it).

Tokens are ``secrets.token_urlsafe(32)``, shown once; only their SHA-256 is stored (the
same helper as the LGPD export links, :func:`privacy.export.token_hash`).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone, translation

from accounts.models import Purpose
from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import policies
from imaging.models import Study
from imaging.principals import Kind, Principal, as_principal
from privacy.consent import ConsentRequired
from privacy.export import token_hash

from . import archive
from .models import DEFAULT_LIFETIME, DownloadLink, Share

if TYPE_CHECKING:
    from imaging.principals import Caller

log = logging.getLogger(__name__)

MAX_LIFETIME = datetime.timedelta(days=30)
MAX_USES = 100
PIN_LENGTHS = (4, 12)
# A resumed download (a Range request not starting at 0) is not a new use for this long
# after the use it continues.
RESUME_WINDOW = datetime.timedelta(hours=24)

LinkUrl = Callable[[str], str]


class Refusal(enum.StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED_UP = "used_up"
    PIN_REQUIRED = "pin_required"
    WRONG_PIN = "wrong_pin"
    WITHDRAWN = "withdrawn"  # its maker may no longer share it, or the consent was revoked


class LinkRefused(Exception):
    """The link cannot be used, and why (the page says it in words)."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


class NotAllowed(PermissionDenied):
    """The user may not share (one of) these studies; views answer 404."""


class InvalidRequest(ValueError):
    """A value out of range, in words for the person filling in the form."""


def new_token() -> tuple[str, str]:
    """A fresh token and its hash; only the hash is stored."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def _targets(studies: Sequence[Study]) -> list[Target]:
    return [Target.study(s) for s in studies]


def _check_lifetime(expires_in: datetime.timedelta) -> None:
    if not datetime.timedelta(hours=1) <= expires_in <= MAX_LIFETIME:
        raise InvalidRequest(translation.gettext(
            "A link can last from one hour to %(days)d days.") % {"days": MAX_LIFETIME.days})


def _check_email(address: str) -> str:
    address = address.strip()
    try:
        validate_email(address)
    except ValidationError:
        raise InvalidRequest(translation.gettext("Enter a valid email address.")) from None
    return address


def _authorize_share(principal: Principal, actor: Actor, studies: Sequence[Study],
                     detail: dict[str, Any], *, outside: bool, legal_basis: str = "",
                     basis_reason: str = "") -> str:
    """Decide and record the share of each study; returns what it rests on.

    Refuses with :class:`~privacy.consent.ConsentRequired` when only the consent is
    missing (the page then offers to record one, or a legal basis), else
    :class:`NotAllowed`.
    """
    basis = ""
    for study in studies:
        decision = policies.decide(principal, policies.Action.SHARE, study.patient,
                                   outside=outside, legal_basis=legal_basis,
                                   basis_reason=basis_reason)
        if not decision:
            # Refusals are recorded here; the share made is recorded by its creation.
            record(AuditAction.SHARE, actor, Target.study(study), Outcome.DENIED,
                   reason=decision.why, detail=detail)
            if decision.why == policies.NO_CONSENT:
                raise ConsentRequired(study.patient, Purpose.SHARING)
            if decision.why in policies.BASIS_PROBLEMS:
                raise InvalidRequest(str(policies.BASIS_PROBLEMS[decision.why]))
            raise NotAllowed("may not share these studies")
        basis = decision.basis
    return basis


def _lifetime_within_code(principal: Principal, expires_in: datetime.timedelta
                          ) -> datetime.datetime:
    """A link made in a code session ends no later than the code."""
    expires = timezone.now() + expires_in
    if principal.kind == Kind.CODE:
        from patients.models import AccessCode

        code_expires = AccessCode.objects.filter(pk=principal.code_id or 0).values_list(
            "expires", flat=True).first()
        if code_expires is not None:
            expires = min(expires, code_expires)
    return expires


def _maker(created_by: Any, access_code_id: int | None) -> Principal:
    """The principal who made a link, as she stands now."""
    if created_by is None:
        return Principal.anonymous()
    if access_code_id is not None:
        return Principal.for_code(created_by, access_code_id)
    return Principal.for_user(created_by)


def _still_shared(obj: DownloadLink | Share, studies: Sequence[Study]) -> bool:
    """Would its maker still be allowed to make this link, on the same basis, now?"""
    maker = _maker(obj.created_by, obj.access_code_id)
    outside = obj.outside if isinstance(obj, DownloadLink) else True
    basis = "" if obj.basis == "consent" else obj.basis
    return all(policies.decide(maker, policies.Action.SHARE, s.patient, outside=outside,
                               legal_basis=basis, basis_reason=obj.basis_reason)
               for s in studies)


def _send(template: str, subject: str, to: str, language: str, context: dict[str, Any]
          ) -> None:
    with translation.override(language or settings.LANGUAGE_CODE):
        body = render_to_string(f"sharing/{template}", context)
        subject = translation.gettext(subject)
    send_mail(subject, body, None, [to])


# --- Download links -------------------------------------------------------------------------


def create_download_link(
    by: Caller, studies: Sequence[Study], *, actor: Actor,
    expires_in: datetime.timedelta = DEFAULT_LIFETIME, pin: str = "", max_uses: int = 5,
    recipient_email: str = "", language: str = "", link_url: LinkUrl | None = None,
    legal_basis: str = "", basis_reason: str = "",
) -> tuple[DownloadLink, str]:
    """A new link to download ``studies``; returns it and its token (shown only now).

    With ``recipient_email`` the link is mailed there, and the PIN, if any, in a second
    message, so one intercepted mail is not enough. Mailed to anyone but the patient it is
    a share outside the care team (consent or a legal basis).
    """
    principal = as_principal(by)
    user = principal.user
    studies = list(studies)
    if not studies:
        raise InvalidRequest(translation.gettext("Choose at least one exam."))
    _check_lifetime(expires_in)
    if not 1 <= max_uses <= MAX_USES:
        raise InvalidRequest(translation.gettext(
            "The number of downloads is from 1 to %(max)d.") % {"max": MAX_USES})
    pin = pin.strip()
    if pin and not (pin.isdigit() and PIN_LENGTHS[0] <= len(pin) <= PIN_LENGTHS[1]):
        raise InvalidRequest(translation.gettext(
            "The PIN is %(min)d to %(max)d digits.")
            % {"min": PIN_LENGTHS[0], "max": PIN_LENGTHS[1]})
    recipient_email = _check_email(recipient_email) if recipient_email.strip() else ""
    outside = bool(recipient_email) and any(
        _patient_email(s).lower() != recipient_email.lower() for s in studies)
    basis = _authorize_share(principal, actor, studies,
                             {"step": "create_link", "sent_to": recipient_email},
                             outside=outside, legal_basis=legal_basis,
                             basis_reason=basis_reason)
    token, hashed = new_token()
    language = language or translation.get_language() or settings.LANGUAGE_CODE
    with transaction.atomic():
        link = DownloadLink.objects.create(
            token_hash=hashed, created_by_id=principal.user_id,
            expires=_lifetime_within_code(principal, expires_in),
            pin_hash=make_password(pin) if pin else "", max_uses=max_uses,
            recipient_email=recipient_email, language=language, outside=outside,
            basis=basis, basis_reason=basis_reason.strip() if basis != "consent" else "",
            access_code_id=principal.code_id,
        )
        link.studies.set(studies)
        record(AuditAction.SHARE, actor, _targets(studies), Outcome.ALLOWED,
               detail={"step": "create_link", "link": link.pk, "expires": link.expires
                       .isoformat(), "max_uses": max_uses, "pin": bool(pin),
                       "sent_to": recipient_email, "basis": basis})
        transaction.on_commit(lambda: _prepare_in_background(link.pk), robust=True)
    if recipient_email and link_url is not None:
        context = {"link": link, "url": link_url(token), "studies": studies, "sender": user}
        _send("email_link.txt", "Your exam images are ready to download", recipient_email,
              language, context)
        if pin:
            _send("email_pin.txt", "Access code for your exam images", recipient_email,
                  language, {**context, "url": "", "pin": pin})
    return link, token


def _prepare_in_background(link_id: int) -> None:
    from .tasks import prepare_link

    prepare_link.delay(link_id)


def prepare(link_id: int) -> int:
    """Compute the CRC-32s the link's ZIP needs, so its first download starts at once."""
    link = DownloadLink.objects.filter(pk=link_id).first()
    if link is None or link.state != "active":
        return 0
    instances = archive.instances_of(list(link.studies.all()))
    archive.ensure_checksums(instances)
    return len(instances)


def may_manage(by: Caller, obj: DownloadLink | Share) -> bool:
    """The person who made it, or someone the policy lets manage all its studies' links."""
    principal = as_principal(by)
    studies = [obj.study] if isinstance(obj, Share) else list(obj.studies.all())
    return all(policies.decide(principal, policies.Action.MANAGE_LINK, s.patient,
                               owner_id=obj.created_by_id) for s in studies)


def _patient_email(study: Study) -> str:
    user = study.patient.user
    return user.email if user is not None else ""


def revoke_link(by: Caller, link: DownloadLink, actor: Actor) -> bool:
    """Stop the link now; True if this call revoked it (False: it already was)."""
    principal = as_principal(by)
    user = principal.user
    studies = list(link.studies.select_related("patient"))
    if user is None or not may_manage(principal, link):
        record(AuditAction.SHARE, actor, _targets(studies), Outcome.DENIED,
               reason="may not revoke this link", detail={"step": "revoke_link",
                                                          "link": link.pk})
        raise NotAllowed("may not revoke this link")
    now = timezone.now()
    changed = DownloadLink.objects.filter(pk=link.pk, revoked__isnull=True).update(
        revoked=now, revoked_by=user.pk)
    if changed:
        link.revoked, link.revoked_by_id = now, user.pk
        record(AuditAction.SHARE, actor, _targets(studies), Outcome.ALLOWED,
               detail={"step": "revoke_link", "link": link.pk})
    return bool(changed)


def _refuse_link(link: DownloadLink | None, actor: Actor, reason: Refusal,
                 detail: dict[str, Any] | None = None) -> LinkRefused:
    targets = _targets(list(link.studies.select_related("patient"))) if link else None
    outcome = Outcome.FAILED if reason in (Refusal.UNKNOWN, Refusal.EXPIRED) else Outcome.DENIED
    record(AuditAction.DOWNLOAD, actor, targets, outcome, reason=f"link {reason.value}",
           detail={"step": "download", **({"link": link.pk} if link else {}),
                   **(detail or {})})
    return LinkRefused(reason)


def find_link(token: str) -> DownloadLink | None:
    return (DownloadLink.objects.select_related("created_by")
            .filter(token_hash=token_hash(token)).first())


def resolve_link(token: str, actor: Actor, *, pin: str | None = None,
                 pin_verified: bool = False, audit_pin_required: bool = False,
                 resuming: bool = False) -> DownloadLink:
    """The usable link for ``token``, or :class:`LinkRefused` saying why (audited).

    ``pin`` is what the visitor typed; ``pin_verified`` says they typed it right before
    (kept in their session). A link without a PIN ignores both. ``resuming``: the rest of
    a download already counted, allowed even when that was the last use.
    """
    link = find_link(token)
    if link is None:
        raise _refuse_link(None, actor, Refusal.UNKNOWN)
    if link.revoked is not None:
        raise _refuse_link(link, actor, Refusal.REVOKED)
    if link.expires <= timezone.now():
        raise _refuse_link(link, actor, Refusal.EXPIRED)
    if link.has_pin and not pin_verified:
        if not pin:
            if audit_pin_required:
                raise _refuse_link(link, actor, Refusal.PIN_REQUIRED)
            raise LinkRefused(Refusal.PIN_REQUIRED)
        if not check_password(pin.strip(), link.pin_hash):
            raise _refuse_link(link, actor, Refusal.WRONG_PIN)
    if link.uses >= link.max_uses and not resuming:
        raise _refuse_link(link, actor, Refusal.USED_UP)
    if not _still_shared(link, list(link.studies.select_related("patient"))):
        raise _refuse_link(link, actor, Refusal.WITHDRAWN)
    return link


def count_use(link: DownloadLink, actor: Actor, *, detail: dict[str, Any] | None = None
              ) -> int:
    """Count one download, unless the limit is reached meanwhile; returns the use number.

    One conditional UPDATE, so concurrent downloads never exceed ``max_uses``.
    """
    now = timezone.now()
    counted = DownloadLink.objects.filter(
        pk=link.pk, uses__lt=F("max_uses"), revoked__isnull=True, expires__gt=now,
    ).update(uses=F("uses") + 1, last_used=now)
    link.refresh_from_db(fields=["uses", "last_used", "revoked", "expires"])
    if not counted:
        reason = (Refusal.REVOKED if link.revoked else
                  Refusal.EXPIRED if link.expires <= now else Refusal.USED_UP)
        raise _refuse_link(link, actor, reason, detail)
    record(AuditAction.DOWNLOAD, actor, _targets(list(link.studies.select_related("patient"))),
           Outcome.ALLOWED, detail={"step": "download", "link": link.pk, "use": link.uses,
                                    **(detail or {})})
    return link.uses


def record_resume(link: DownloadLink, actor: Actor, detail: dict[str, Any]) -> None:
    """A resumed part of a download already counted: audited, not counted again."""
    record(AuditAction.DOWNLOAD, actor, _targets(list(link.studies.select_related("patient"))),
           Outcome.ALLOWED, detail={"step": "resume", "link": link.pk, **detail})


def link_plan(link: DownloadLink) -> archive.Plan:
    studies = list(link.studies.select_related("patient").order_by("study_date", "pk"))
    return archive.plan_for(studies, seed=f"link:{link.pk}", language=link.language,
                            modified=link.created)


# --- Shares with outside professionals ------------------------------------------------------


def share_with_professional(
    by: Caller, study: Study, recipient_email: str, *, actor: Actor, link_url: LinkUrl,
    recipient_name: str = "", message: str = "",
    expires_in: datetime.timedelta = DEFAULT_LIFETIME, allow_download: bool = False,
    language: str = "", legal_basis: str = "", basis_reason: str = "",
) -> tuple[Share, str]:
    """Give an outside professional a view-only (optionally downloadable) link by email.

    Whoever shares needs the policy's ``SHARE`` and the patient's sharing consent now
    (raises :class:`~privacy.consent.ConsentRequired`), or, for staff, a legal basis with a
    reason.
    """
    principal = as_principal(by)
    user = principal.user
    if not recipient_email.strip():
        raise InvalidRequest(translation.gettext("Write the professional's email address."))
    recipient_email = _check_email(recipient_email)
    _check_lifetime(expires_in)
    detail = {"step": "share", "recipient": recipient_email}
    basis = _authorize_share(principal, actor, [study], detail, outside=True,
                             legal_basis=legal_basis, basis_reason=basis_reason)
    token, hashed = new_token()
    language = language or translation.get_language() or settings.LANGUAGE_CODE
    with transaction.atomic():
        share = Share.objects.create(
            token_hash=hashed, study=study, recipient_name=recipient_name.strip(),
            recipient_email=recipient_email, message=message.strip(),
            allow_download=allow_download, created_by_id=principal.user_id,
            expires=_lifetime_within_code(principal, expires_in), language=language,
            basis=basis, basis_reason=basis_reason.strip() if basis != "consent" else "",
            access_code_id=principal.code_id,
        )
        record(AuditAction.SHARE, actor, Target.study(study), Outcome.ALLOWED,
               detail={**detail, "share": share.pk, "expires": share.expires.isoformat(),
                       "download": allow_download, "basis": basis})
    sender = user.get_full_name() or user.get_username()  # type: ignore[union-attr]
    _send("email_share.txt", "Exam images shared with you", recipient_email, language,
          {"share": share, "url": link_url(token), "study": study, "sender": sender})
    return share, token


def revoke_share(by: Caller, share: Share, actor: Actor) -> bool:
    principal = as_principal(by)
    user = principal.user
    if user is None or not may_manage(principal, share):
        record(AuditAction.SHARE, actor, Target.study(share.study), Outcome.DENIED,
               reason="may not revoke this share", detail={"step": "revoke_share",
                                                           "share": share.pk})
        raise NotAllowed("may not revoke this share")
    now = timezone.now()
    changed = Share.objects.filter(pk=share.pk, revoked__isnull=True).update(
        revoked=now, revoked_by=user.pk)
    if changed:
        share.revoked, share.revoked_by_id = now, user.pk
        record(AuditAction.SHARE, actor, Target.study(share.study), Outcome.ALLOWED,
               detail={"step": "revoke_share", "share": share.pk})
    return bool(changed)


def share_actor(share: Share, actor: Actor) -> Actor:
    """The outside professional, named by the address the share was sent to."""
    return dataclasses.replace(actor, user_id=None, username=f"share:{share.recipient_email}",
                               role="outside professional")


def resolve_share(token: str, actor: Actor, action: AuditAction = AuditAction.VIEW) -> Share:
    """The usable share for ``token``, or :class:`LinkRefused` (audited)."""
    share = Share.objects.select_related("study__patient", "created_by").filter(
        token_hash=token_hash(token)).first()
    reason = None
    if share is None:
        reason = Refusal.UNKNOWN
    elif share.revoked is not None:
        reason = Refusal.REVOKED
    elif share.expires <= timezone.now():
        reason = Refusal.EXPIRED
    elif action == AuditAction.DOWNLOAD and not share.allow_download:
        reason = Refusal.UNKNOWN
    elif not _still_shared(share, [share.study]):
        reason = Refusal.WITHDRAWN
    if reason is not None:
        record(action, share_actor(share, actor) if share else actor,
               Target.study(share.study) if share else None,
               Outcome.FAILED if reason in (Refusal.UNKNOWN, Refusal.EXPIRED)
               else Outcome.DENIED, reason=f"share {reason.value}",
               detail={"step": "share", **({"share": share.pk} if share else {})})
        raise LinkRefused(reason)
    assert share is not None
    return share


def record_share_use(share: Share, actor: Actor, action: AuditAction,
                     detail: dict[str, Any] | None = None) -> None:
    now = timezone.now()
    Share.objects.filter(pk=share.pk).update(views=F("views") + 1, last_used=now)
    record(action, share_actor(share, actor), Target.study(share.study), Outcome.ALLOWED,
           detail={"step": "share", "share": share.pk, **(detail or {})})


def share_plan(share: Share) -> archive.Plan:
    return archive.plan_for([share.study], seed=f"share:{share.pk}", language=share.language,
                            modified=share.created)
