"""Download links (the CD replacement) and view-only shares with outside professionals.

Only the SHA-256 of a link's token is kept (the token is shown once, when the link is made);
a PIN is kept as a Django password hash. Links are revoked, never deleted, so the record of
what was given to whom stays.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

DEFAULT_LIFETIME = datetime.timedelta(days=7)


def default_expiry() -> datetime.datetime:
    return timezone.now() + DEFAULT_LIFETIME


class IssuedLink(models.Model):
    """What a download link and a share have alike: a token known by its hash, a lifetime,
    revocation, the language it was made in and what it rests on."""

    token_hash = models.CharField(_("token hash (SHA-256)"), max_length=64, unique=True,
                                  editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    expires = models.DateTimeField(_("expires"), default=default_expiry, db_index=True)
    last_used = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked = models.DateTimeField(_("revoked"), null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+",
                                   verbose_name=_("revoked by"))
    # The language of what the recipient reads (for a download link, the README and index
    # page in the ZIP: fixed, so every download of a link is byte for byte the same).
    language = models.CharField(_("language"), max_length=16, blank=True)
    # What the share rests on: "consent" (checked again at every use), a legal basis
    # chosen by staff (imaging.policies.LEGAL_BASES) with its reason, or "" when it goes
    # to the patient only.
    basis = models.CharField(_("basis"), max_length=32, blank=True)
    basis_reason = models.TextField(_("reason for the legal basis"), blank=True)
    # Made in a receipt-code session: the link lasts no longer than the code and is
    # revoked with it.
    access_code = models.ForeignKey("patients.AccessCode", null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+",
                                    verbose_name=_("made with access code"))

    class Meta:
        abstract = True

    def _lapsed(self) -> str | None:
        """``"revoked"`` or ``"expired"``, else None."""
        if self.revoked is not None:
            return "revoked"
        if self.expires <= timezone.now():
            return "expired"
        return None


class DownloadLink(IssuedLink):
    """A signed, random, expiring, revocable link to download a set of studies as a ZIP."""

    studies = models.ManyToManyField("imaging.Study", related_name="download_links",
                                     verbose_name=_("studies"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True,
                                   on_delete=models.SET_NULL, related_name="download_links",
                                   verbose_name=_("created by"))
    pin_hash = models.CharField(_("PIN hash"), max_length=128, blank=True, editable=False)
    max_uses = models.PositiveIntegerField(_("maximum downloads"), default=5)
    uses = models.PositiveIntegerField(_("downloads"), default=0)
    recipient_email = models.EmailField(_("sent to"), blank=True)
    # Sent to someone outside the care team (not the patient's own address).
    outside = models.BooleanField(_("outside the care team"), default=False)

    class Meta:
        verbose_name = _("download link")
        verbose_name_plural = _("download links")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"#{self.pk} ({self.created:%Y-%m-%d}, {self.uses}/{self.max_uses})"

    @property
    def has_pin(self) -> bool:
        return bool(self.pin_hash)

    @property
    def state(self) -> str:
        return self._lapsed() or ("used_up" if self.uses >= self.max_uses else "active")


class Share(IssuedLink):
    """A view-only link to one study for a professional outside the clinic."""

    study = models.ForeignKey("imaging.Study", on_delete=models.CASCADE,
                              related_name="shares", verbose_name=_("study"))
    recipient_name = models.CharField(_("recipient"), max_length=200, blank=True)
    recipient_email = models.EmailField(_("recipient email"))
    message = models.TextField(_("message"), blank=True)
    allow_download = models.BooleanField(_("may download"), default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True,
                                   on_delete=models.SET_NULL, related_name="shares",
                                   verbose_name=_("shared by"))
    views = models.PositiveIntegerField(_("views"), default=0)

    class Meta:
        verbose_name = _("share with a professional")
        verbose_name_plural = _("shares with professionals")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.study} → {self.recipient_email}"

    @property
    def state(self) -> str:
        return self._lapsed() or "active"


class MemberChecksum(models.Model):
    """CRC-32 of an instance as it goes into a ZIP, computed once, kept for every link.

    ZIP headers need each member's CRC-32 before its bytes; with it known, every byte of a
    ZIP is computable in advance and Range requests can be answered. Ingest records only
    SHA-256, so the CRC is filled here (in the background when a link is made, else at the
    first download). ``sha256`` ties the value to the stored bytes it was computed over.
    """

    instance = models.OneToOneField("imaging.Instance", on_delete=models.CASCADE,
                                    primary_key=True, related_name="+")
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    crc32 = models.PositiveBigIntegerField()

    class Meta:
        verbose_name = _("ZIP member checksum")
        verbose_name_plural = _("ZIP member checksums")

    def __str__(self) -> str:
        return f"{self.instance_id}: {self.crc32:08x}"
