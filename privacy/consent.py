"""Consent for sharing and secondary uses (LGPD art. 11), checked at the moment of use.

Care needs no consent (health protection, art. 11, II, f). Sharing with an outside
professional, teaching or research use and processing by automated tools do: features that
do those things call :func:`require_consent` right before acting, never earlier, so a
revocation takes effect at once.

A newer consent for the same purpose supersedes older ones; the latest one decides.
Consents are revoked, never deleted: changes are recorded by django-auditlog
(``audit.model_changes``), attributed to the person who recorded or revoked them.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from auditlog.context import set_actor
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Consent, Purpose

if TYPE_CHECKING:
    from imaging.models import Patient

# The version of the consent texts the portal shows now. Change it (and the texts) together.
CURRENT_TEXT_VERSION = "2026.1"

TEXTS = {
    Purpose.SHARING: _(
        "I allow the clinic to share my exams and reports with a health professional outside "
        "the clinic when I or my doctor ask for it. I can revoke this at any time; shares "
        "made before stay on record."
    ),
    Purpose.RESEARCH: _(
        "I allow my exams to be used for teaching and research, de-identified whenever "
        "possible. I can revoke this at any time; it does not affect my care."
    ),
    Purpose.AUTOMATED: _(
        "I allow my exams to be processed by automated tools (for example, image analysis "
        "software) that support the professionals who care for me. A professional always "
        "reviews the results."
    ),
}


class ConsentRequired(PermissionDenied):
    """The patient has no valid consent for this purpose; the use must not happen.

    A ``PermissionDenied``, so a view that lets it through answers 403.
    """

    def __init__(self, patient: Patient, purpose: str) -> None:
        self.patient = patient
        self.purpose = purpose
        label = Purpose(purpose).label if purpose in Purpose.values else purpose
        super().__init__(
            f"patient {patient.pk} has not consented to {purpose!s} ({label!s})"
        )


def _actor(user: Any) -> Any:
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def give(
    patient: Patient, purpose: str, text_version: str, channel: str, recorded_by: Any,
) -> Consent:
    """Record a consent for ``purpose`` given now, through ``channel``, to ``text_version``."""
    if purpose not in Purpose.values:
        raise ValueError(f"unknown purpose {purpose!r}")
    if channel not in Consent.Channel.values:
        raise ValueError(f"unknown channel {channel!r}")
    if not text_version:
        raise ValueError("the text version agreed to is required")
    with set_actor(_actor(recorded_by)):
        return Consent.objects.create(
            patient=patient, purpose=purpose, text_version=text_version, channel=channel,
            recorded_by=_actor(recorded_by),
        )


def revoke(consent: Consent, by: Any) -> Consent:
    """Mark ``consent`` revoked now (once; revoking again changes nothing)."""
    with transaction.atomic(), set_actor(_actor(by)):
        locked = Consent.objects.select_for_update().get(pk=consent.pk)
        if locked.revoked is None:
            locked.revoked = timezone.now()
            locked.save(update_fields=["revoked"])
    consent.revoked = locked.revoked
    return locked


def current(patient: Patient, purpose: str,
            at: datetime.datetime | None = None) -> Consent | None:
    """The consent that decides ``purpose`` at ``at``: the latest given by then."""
    at = at or timezone.now()
    return (
        Consent.objects.filter(patient=patient, purpose=purpose, given__lte=at)
        .order_by("-given", "-pk")
        .first()
    )


def has_consent(patient: Patient, purpose: str, at: datetime.datetime | None = None) -> bool:
    """Whether the latest consent for ``purpose`` given by ``at`` was unrevoked at ``at``."""
    at = at or timezone.now()
    latest = current(patient, purpose, at)
    return latest is not None and (latest.revoked is None or latest.revoked > at)


def require_consent(patient: Patient, purpose: str) -> Consent:
    """The valid consent for ``purpose`` now, or :class:`ConsentRequired`.

    Call it at the moment of use (sharing, research export, automated processing).
    """
    now = timezone.now()
    latest = current(patient, purpose, now)
    if latest is None or (latest.revoked is not None and latest.revoked <= now):
        raise ConsentRequired(patient, purpose)
    return latest


def status_by_purpose(patient: Patient) -> list[dict[str, Any]]:
    """For the portal page: each purpose with its text and the consent that decides it now."""
    rows = []
    for purpose in Purpose:
        latest = current(patient, purpose)
        rows.append({
            "purpose": purpose,
            "label": purpose.label,
            "text": TEXTS[purpose],
            "consent": latest,
            "active": latest is not None and latest.revoked is None,
        })
    return rows
