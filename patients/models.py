"""Access codes printed on the exam receipt: how a patient without an account gets in.

Only the SHA-256 of a code is kept (a code is long and random, so a salt adds nothing);
the plaintext is shown once, on the receipt. ``prefix`` (its first group) tells codes apart
in lists and keys the rate limit on guessing. Codes are revoked, never deleted, so the
record of who was given access stays.
"""

from __future__ import annotations

import datetime
import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# No 0/O, 1/I/L or U/V look-alikes: the code is read off paper and typed on a phone.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
GROUP = 4
GROUPS = 5
DEFAULT_LIFETIME_DAYS = 30


def lifetime() -> datetime.timedelta:
    """How long a new code works (``PATIENT_CODE_LIFETIME_DAYS``, default 30 days)."""
    days = getattr(settings, "PATIENT_CODE_LIFETIME_DAYS", DEFAULT_LIFETIME_DAYS)
    return datetime.timedelta(days=float(days))


def default_expiry() -> datetime.datetime:
    return timezone.now() + lifetime()


def normalize(code: str) -> str:
    """What the patient typed, as stored: upper case, without spaces and dashes."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def hash_code(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


class AccessCode(models.Model):
    """One patient's receipt code: single-patient, expiring, revocable."""

    patient = models.ForeignKey("imaging.Patient", on_delete=models.CASCADE,
                                related_name="access_codes", verbose_name=_("patient"))
    code_hash = models.CharField(_("code hash (SHA-256)"), max_length=64, unique=True,
                                 editable=False)
    prefix = models.CharField(_("prefix"), max_length=GROUP, db_index=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+",
                                   verbose_name=_("issued by"))
    created = models.DateTimeField(_("issued"), auto_now_add=True)
    expires = models.DateTimeField(_("expires"), default=default_expiry, db_index=True)
    uses = models.PositiveIntegerField(_("sign-ins"), default=0)
    last_used = models.DateTimeField(_("last used"), null=True, blank=True)
    # Wrong birth dates typed with this (right) code; past a limit the code stops working.
    failures = models.PositiveIntegerField(_("wrong birth dates"), default=0)
    revoked = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("access code")
        verbose_name_plural = _("access codes")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.prefix}-… ({self.patient})"

    @property
    def active(self) -> bool:
        return self.revoked is None and self.expires > timezone.now()
