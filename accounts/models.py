"""Portal users, their roles and clinics, who may see which patient, and LGPD consent."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    ADMIN = "admin", _("Clinic admin")
    DOCTOR = "doctor", _("Doctor")
    TECHNICIAN = "technician", _("Technician")
    PATIENT = "patient", _("Patient")


class Clinic(models.Model):
    name = models.CharField(_("name"), max_length=200, unique=True)
    cnes = models.CharField(_("CNES code"), max_length=16, blank=True)
    # Retention (Lei 13.787/2018, CFM): years after the patient's last exam, and for minors
    # at least until the patient reaches this age.
    retention_years = models.PositiveSmallIntegerField(_("retention (years after last exam)"),
                                                       default=20)
    minor_retention_age = models.PositiveSmallIntegerField(
        _("keep minors' records at least until age"), default=38
    )
    # Local copies older than this (since stored or recalled) are deleted once the replica
    # holds a verified copy; a read recalls them (replica.evict). Empty: never by age.
    evict_local_after_days = models.PositiveIntegerField(
        _("evict local copies after (days)"), null=True, blank=True,
        help_text=_("Objects with a verified replica copy leave local storage this many days "
                    "after they were stored; they are fetched back when read. Empty: never."))

    class Meta:
        verbose_name = _("clinic")
        verbose_name_plural = _("clinics")

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    role = models.CharField(
        _("role"), max_length=16, choices=Role.choices, default=Role.PATIENT
    )
    clinics = models.ManyToManyField(Clinic, blank=True, related_name="members",
                                     verbose_name=_("clinics"))
    # The professional council registration a doctor signs reports with ("CRM-SP 123456").
    professional_id = models.CharField(_("professional registration (CRM)"), max_length=32,
                                       blank=True)

    @property
    def needs_second_factor(self) -> bool:
        """Everyone who sees other people's records signs in with TOTP."""
        return self.is_staff or self.is_superuser or self.role != Role.PATIENT


class AccessGrant(models.Model):
    """A doctor's right to see one patient's records at one clinic.

    A care relationship (the patient's doctor) or an explicit grant; both may end.
    """

    class Kind(models.TextChoices):
        CARE = "care", _("care relationship")
        GRANT = "grant", _("explicit grant")

    doctor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                               related_name="access_grants", verbose_name=_("doctor"))
    patient = models.ForeignKey("imaging.Patient", on_delete=models.CASCADE,
                                related_name="access_grants", verbose_name=_("patient"))
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, verbose_name=_("clinic"))
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices, default=Kind.CARE)
    starts = models.DateTimeField(_("starts"), default=timezone.now)
    ends = models.DateTimeField(_("ends"), null=True, blank=True)
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("access grant")
        verbose_name_plural = _("access grants")
        indexes = [models.Index(fields=["doctor", "patient"])]

    def __str__(self) -> str:
        return f"{self.doctor} → {self.patient} ({self.get_kind_display()})"

    @staticmethod
    def active_q(prefix: str = "", now: object = None) -> Q:
        now = now or timezone.now()
        return Q(**{f"{prefix}starts__lte": now}) & (
            Q(**{f"{prefix}ends__isnull": True}) | Q(**{f"{prefix}ends__gt": now})
        )


class BreakGlassAccess(models.Model):
    """Emergency access outside a doctor's grants: allowed, with a written reason, reviewed."""

    doctor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                               related_name="break_glass", verbose_name=_("doctor"))
    patient = models.ForeignKey("imaging.Patient", on_delete=models.CASCADE,
                                related_name="break_glass", verbose_name=_("patient"))
    reason = models.TextField(_("reason"))
    opened = models.DateTimeField(_("opened"), default=timezone.now)
    expires = models.DateTimeField(_("expires"))
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+",
                                    verbose_name=_("reviewed by"))
    reviewed = models.DateTimeField(_("reviewed"), null=True, blank=True)
    review_note = models.TextField(_("review note"), blank=True)

    class Meta:
        verbose_name = _("break-the-glass access")
        verbose_name_plural = _("break-the-glass accesses")
        ordering = ["-opened"]

    def __str__(self) -> str:
        return f"{self.doctor} → {self.patient} at {self.opened:%Y-%m-%d %H:%M}"


class Purpose(models.TextChoices):
    SHARING = "sharing", _("sharing with an outside professional")
    RESEARCH = "research", _("teaching or research use")
    AUTOMATED = "automated", _("processing by automated tools")


class Consent(models.Model):
    """A patient's consent for one purpose (LGPD art. 11), with the text version agreed to.

    Care itself rests on health protection (art. 11, II, f) and needs none; sharing and
    secondary uses check for an unrevoked consent at the moment of use.
    """

    class Channel(models.TextChoices):
        PORTAL = "portal", _("patient portal")
        PAPER = "paper", _("signed paper form")
        RECEPTION = "reception", _("at the reception desk")

    patient = models.ForeignKey("imaging.Patient", on_delete=models.CASCADE,
                                related_name="consents", verbose_name=_("patient"))
    purpose = models.CharField(_("purpose"), max_length=16, choices=Purpose.choices)
    text_version = models.CharField(_("text version"), max_length=32)
    given = models.DateTimeField(_("given"), default=timezone.now)
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    revoked = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("consent")
        verbose_name_plural = _("consents")
        ordering = ["-given"]
        indexes = [models.Index(fields=["patient", "purpose"])]

    def __str__(self) -> str:
        return f"{self.patient} {self.get_purpose_display()} v{self.text_version}"


class ApiToken(models.Model):
    """A bearer token for DICOMweb clients, issued per user and revocable.

    Only the SHA-256 of the secret is kept; the secret is shown once, when it is created.
    ``prefix`` (the first characters of the secret) tells tokens apart in lists.
    """

    PREFIX_LENGTH = 8

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens", verbose_name=_("user"))
    name = models.CharField(_("name"), max_length=100)
    token_hash = models.CharField(_("token hash (SHA-256)"), max_length=64, unique=True,
                                  editable=False)
    prefix = models.CharField(_("prefix"), max_length=16, editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    last_used = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    expires = models.DateTimeField(_("expires"))  # every token expires (accounts.tokens)
    revoked = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def issue(cls, user: User, name: str, expires: datetime | None = None
              ) -> tuple[ApiToken, str]:
        """Create a token; returns it and its secret, which is never stored or shown again.

        Without ``expires`` it lasts ``API_TOKEN_DEFAULT_DAYS``; every token expires.
        """
        if expires is None:
            expires = timezone.now() + timedelta(days=settings.API_TOKEN_DEFAULT_DAYS)
        secret = secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, token_hash=cls.hash(secret),
                                   prefix=secret[: cls.PREFIX_LENGTH], expires=expires)
        return token, secret

    @property
    def active(self) -> bool:
        return self.revoked is None and self.expires > timezone.now()

    def revoke(self) -> None:
        if self.revoked is None:
            self.revoked = timezone.now()
            self.save(update_fields=["revoked"])
