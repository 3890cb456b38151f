"""Known DICOM peers: the AE titles and hosts the listener talks to, and what each may do."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _


def validate_ae_title(value: str) -> None:
    """PS3.5 AE: 1 to 16 characters of the default repertoire, no backslash or control."""
    stripped = value.strip()
    if not stripped or len(value) > 16:
        raise ValidationError(_("An AE title has 1 to 16 characters."))
    if "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ValidationError(_("An AE title has no backslash and no control characters."))


class Peer(models.Model):
    """A modality, workstation or archive that may associate with the portal.

    ``port`` is where the peer listens for C-STORE: only peers with a port are C-MOVE
    destinations.
    """

    ae_title = models.CharField(
        _("AE title"), max_length=16, unique=True, validators=[validate_ae_title]
    )
    host = models.CharField(
        _("host"), max_length=255, help_text=_("IP address or host name the peer connects from")
    )
    port = models.PositiveIntegerField(
        _("port"), null=True, blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text=_("where the peer receives C-STORE; empty if it is never a move destination"),
    )
    may_store = models.BooleanField(_("may store (C-STORE)"), default=False)
    may_query = models.BooleanField(_("may query (C-FIND)"), default=False)
    may_retrieve = models.BooleanField(_("may retrieve (C-GET, C-MOVE)"), default=False)
    enabled = models.BooleanField(_("enabled"), default=True)
    # Bound to a clinic: it stores into, finds and retrieves that clinic's patients only.
    # Unbound: the whole archive (a first installation, or a router for every clinic).
    clinic = models.ForeignKey("accounts.Clinic", null=True, blank=True,
                               on_delete=models.PROTECT, related_name="dicom_peers",
                               verbose_name=_("clinic"),
                               help_text=_("empty: the peer sees every clinic's patients"))
    description = models.CharField(_("description"), max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("DICOM peer")
        verbose_name_plural = _("DICOM peers")
        ordering = ["ae_title"]

    def __str__(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else self.host
        return f"{self.ae_title} @ {where}"

    def save(self, *args: object, **kwargs: object) -> None:
        self.ae_title = self.ae_title.strip()
        self.host = self.host.strip()
        super().save(*args, **kwargs)  # type: ignore[arg-type]
