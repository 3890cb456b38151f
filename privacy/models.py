"""LGPD records: data exports, legal holds, purge requests, tombstones and pending blob deletions.

Consent lives in ``accounts.Consent`` (it predates this app); the services that give, revoke
and check it are in :mod:`privacy.consent`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class DataExport(models.Model):
    """A patient's copy of their data (LGPD art. 18): DICOM files plus who accessed them.

    Built in the background; the file sits in the default storage under an opaque key and is
    handed out through a link whose token is stored only as its SHA-256.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("waiting")
        RUNNING = "running", _("being prepared")
        READY = "ready", _("ready")
        FAILED = "failed", _("failed")
        EXPIRED = "expired", _("expired")

    patient = models.ForeignKey("imaging.Patient", on_delete=models.CASCADE,
                                related_name="data_exports", verbose_name=_("patient"))
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="+",
                                     verbose_name=_("requested by"))
    status = models.CharField(_("status"), max_length=8, choices=Status.choices,
                              default=Status.PENDING, db_index=True)
    language = models.CharField(_("language"), max_length=16, blank=True)
    created = models.DateTimeField(_("requested"), default=timezone.now)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)
    file_key = models.CharField(_("file"), max_length=200, blank=True)
    size_bytes = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    num_instances = models.PositiveIntegerField(_("instances"), default=0)
    token_hash = models.CharField(_("link token (SHA-256)"), max_length=64, null=True,
                                  blank=True, unique=True)
    expires = models.DateTimeField(_("link expires"), null=True, blank=True)
    downloads = models.PositiveIntegerField(_("downloads"), default=0)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("data export")
        verbose_name_plural = _("data exports")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"export #{self.pk} of patient {self.patient_id} ({self.status})"

    @property
    def is_expired(self) -> bool:
        return self.expires is not None and self.expires <= timezone.now()

    @property
    def downloadable(self) -> bool:
        return self.status == self.Status.READY and bool(self.file_key) and not self.is_expired


class LegalHold(models.Model):
    """Keep a patient's or one study's records past retention (lawsuit, investigation).

    Protected foreign keys: a held patient or study cannot be deleted by any path.
    """

    patient = models.ForeignKey("imaging.Patient", null=True, blank=True,
                                on_delete=models.PROTECT, related_name="legal_holds",
                                verbose_name=_("patient"))
    study = models.ForeignKey("imaging.Study", null=True, blank=True, on_delete=models.PROTECT,
                              related_name="legal_holds", verbose_name=_("study"))
    reason = models.TextField(_("reason"))
    placed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                  on_delete=models.SET_NULL, related_name="+",
                                  verbose_name=_("placed by"))
    placed = models.DateTimeField(_("placed"), default=timezone.now)
    lifted = models.DateTimeField(_("lifted"), null=True, blank=True)
    lifted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                  on_delete=models.SET_NULL, related_name="+",
                                  verbose_name=_("lifted by"))

    class Meta:
        verbose_name = _("legal hold")
        verbose_name_plural = _("legal holds")
        ordering = ["-placed"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(patient__isnull=False, study__isnull=True)
                           | Q(patient__isnull=True, study__isnull=False)),
                name="legal_hold_on_patient_or_study",
            ),
        ]

    def __str__(self) -> str:
        what = f"patient {self.patient_id}" if self.patient_id else f"study {self.study_id}"
        return f"hold on {what}{' (lifted)' if self.lifted else ''}"

    @property
    def active(self) -> bool:
        return self.lifted is None


class PurgeRequest(models.Model):
    """A patient past retention, listed for an admin to approve; nothing is purged unasked.

    The patient's identifiers are copied so the request still reads after the purge.
    """

    class Status(models.TextChoices):
        LISTED = "listed", _("listed")
        APPROVED = "approved", _("approved")
        PURGED = "purged", _("purged")
        CANCELLED = "cancelled", _("cancelled")

    OPEN = (Status.LISTED, Status.APPROVED)

    patient = models.ForeignKey("imaging.Patient", null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="purge_requests",
                                verbose_name=_("patient"))
    patient_pk = models.BigIntegerField(_("patient key"), db_index=True)
    patient_ref = models.CharField(_("patient ID"), max_length=140)
    last_exam = models.DateField(_("last exam"), null=True, blank=True)
    retention_end = models.DateField(_("retention ends"))
    listed_at = models.DateTimeField(_("listed"), default=timezone.now)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices,
                              default=Status.LISTED, db_index=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+",
                                    verbose_name=_("approved by"))
    approved_at = models.DateTimeField(_("approved"), null=True, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    note = models.TextField(_("note"), blank=True)

    class Meta:
        verbose_name = _("purge request")
        verbose_name_plural = _("purge requests")
        ordering = ["-listed_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient_pk"], condition=Q(status__in=["listed", "approved"]),
                name="one_open_purge_request_per_patient",
            ),
        ]

    def __str__(self) -> str:
        return f"purge {self.patient_ref} (retention ended {self.retention_end})"


class Tombstone(models.Model):
    """What is left of a purged patient: enough to prove the purge, not the personal data.

    Identifiers the clinic issued (patient ID, study UIDs, accession numbers) and dates stay;
    the name is reduced to initials; birth date, sex and images are gone.
    """

    request = models.OneToOneField(PurgeRequest, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="tombstone")
    patient_pk = models.BigIntegerField(_("patient key"), db_index=True)
    patient_id = models.CharField(_("patient ID"), max_length=64, db_index=True)
    issuer = models.CharField(_("issuer of patient ID"), max_length=64, blank=True)
    initials = models.CharField(_("initials"), max_length=16, blank=True)
    clinic = models.CharField(_("clinic"), max_length=200, blank=True)
    # [{"uid", "date", "accession", "modalities", "instances", "bytes"}, ...]
    studies: models.JSONField[Any, Any] = models.JSONField(_("studies"), default=list)
    num_instances = models.PositiveIntegerField(_("instances"), default=0)
    size_bytes = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    last_exam = models.DateField(_("last exam"), null=True, blank=True)
    retention_end = models.DateField(_("retention ended"), null=True, blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+",
                                    verbose_name=_("approved by"))
    approved_by_name = models.CharField(_("approved by (username)"), max_length=150)
    approved_at = models.DateTimeField(_("approved"), null=True, blank=True)
    purged_by_name = models.CharField(_("purged by (username)"), max_length=150)
    reason = models.TextField(_("reason"))
    purged_at = models.DateTimeField(_("purged"), default=timezone.now)
    blobs_deleted = models.DateTimeField(_("all files deleted"), null=True, blank=True)

    class Meta:
        verbose_name = _("tombstone")
        verbose_name_plural = _("tombstones")
        ordering = ["-purged_at"]

    def __str__(self) -> str:
        ref = f"{self.patient_id}^{self.issuer}" if self.issuer else self.patient_id
        return f"{ref} purged {self.purged_at:%Y-%m-%d}"


class PendingBlobDeletion(models.Model):
    """A file whose index row is gone and that still has to be deleted from its storage.

    Written in the purge transaction, removed once the file is deleted; whatever is left is
    retried by ``privacy.tasks.delete_pending_blobs``. So no row ever points at a deleted
    file, and no file of a purged patient is forgotten.
    """

    tombstone = models.ForeignKey(Tombstone, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="pending_blobs")
    storage = models.CharField(_("storage"), max_length=32)
    key = models.CharField(_("key"), max_length=200)
    created = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name = _("file awaiting deletion")
        verbose_name_plural = _("files awaiting deletion")
        constraints = [
            models.UniqueConstraint(fields=["storage", "key"], name="unique_pending_blob"),
        ]

    def __str__(self) -> str:
        return f"{self.storage}:{self.key}"
