"""The archive index: patients, studies, series and instances.

The rows are the index; the DICOM files themselves are blobs in the ``dicom`` storage under
opaque keys (see ``imaging.blobs``), never under patient or UID paths.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .search_text import SearchTextField

BODY_PARTS_LENGTH = 128


class Patient(models.Model):
    patient_id = models.CharField(_("patient ID"), max_length=64, db_index=True)
    issuer = models.CharField(_("issuer of patient ID"), max_length=64, blank=True, default="")
    name = models.CharField(_("name"), max_length=324, blank=True, db_index=True)
    # The name as the worklist matches and sorts it (imaging.search_text); on PostgreSQL
    # also a trigram index for "any part of the name" (migration 0006).
    name_search = SearchTextField(max_length=324, source="name", db_index=True)
    birth_date = models.DateField(_("birth date"), null=True, blank=True)
    sex = models.CharField(_("sex"), max_length=16, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="patient_records",
        verbose_name=_("portal user"),
    )
    clinic = models.ForeignKey(
        "accounts.Clinic", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="patients", verbose_name=_("clinic"),
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("patient")
        verbose_name_plural = _("patients")
        constraints = [
            # Objects without a PatientID each get their own patient row (found by study).
            models.UniqueConstraint(
                fields=["patient_id", "issuer"],
                condition=~Q(patient_id=""),
                name="unique_patient_id_per_issuer",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or '?'} ({self.patient_id or '-'})"


class ReportStatus(models.TextChoices):
    """Where the study's report stands; kept on the study so the worklist filters on it
    with an index. Written by :mod:`reports.service` with the report itself."""

    NONE = "none", _("No report")
    PRELIMINARY = "preliminary", _("Preliminary")
    FINAL = "final", _("Final")


class Study(models.Model):
    study_instance_uid = models.CharField(_("Study Instance UID"), max_length=64, unique=True)
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="studies", verbose_name=_("patient")
    )
    study_date = models.DateField(_("study date"), null=True, blank=True, db_index=True)
    study_time = models.CharField(_("study time"), max_length=16, blank=True)
    accession_number = models.CharField(
        _("accession number"), max_length=64, blank=True, db_index=True
    )
    study_id = models.CharField(_("study ID"), max_length=16, blank=True)
    description = models.CharField(_("description"), max_length=64, blank=True)
    referring_physician = models.CharField(
        _("referring physician"), max_length=324, blank=True
    )
    referring_physician_search = SearchTextField(max_length=324, source="referring_physician")
    institution = models.CharField(_("institution"), max_length=64, blank=True)
    # Backslash-separated, as DICOM's ModalitiesInStudy: "CT\\SR".
    modalities = models.CharField(_("modalities"), max_length=64, blank=True, db_index=True)
    # Its series' body parts, backslash-separated like ``modalities``, so the worklist
    # filters on the study row alone (written by ingest with the modalities).
    body_parts = models.CharField(_("body parts"), max_length=BODY_PARTS_LENGTH, blank=True,
                                  default="")
    num_series = models.PositiveIntegerField(_("series"), default=0)
    num_instances = models.PositiveIntegerField(_("instances"), default=0)
    size_bytes = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    report_status = models.CharField(
        _("report status"), max_length=16, choices=ReportStatus.choices,
        default=ReportStatus.NONE, db_index=True,
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("study")
        verbose_name_plural = _("studies")
        ordering = ["-study_date", "-study_time"]
        indexes = [models.Index(fields=["patient", "study_date"])]

    def __str__(self) -> str:
        return f"{self.study_date or '?'} {self.description or self.study_instance_uid}"


class Series(models.Model):
    series_instance_uid = models.CharField(
        _("Series Instance UID"), max_length=64, unique=True
    )
    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, related_name="series", verbose_name=_("study")
    )
    modality = models.CharField(_("modality"), max_length=16, blank=True, db_index=True)
    series_number = models.IntegerField(_("series number"), null=True, blank=True)
    description = models.CharField(_("description"), max_length=64, blank=True)
    body_part = models.CharField(_("body part"), max_length=64, blank=True)
    series_date = models.DateField(_("series date"), null=True, blank=True)
    num_instances = models.PositiveIntegerField(_("instances"), default=0)
    size_bytes = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("series")
        verbose_name_plural = _("series")
        ordering = ["series_number"]

    def __str__(self) -> str:
        return f"{self.modality} {self.series_number or ''} {self.description}".strip()


class Instance(models.Model):
    """One stored DICOM object: the original bytes, their checksum and their metadata."""

    sop_instance_uid = models.CharField(_("SOP Instance UID"), max_length=64, unique=True)
    series = models.ForeignKey(
        Series, on_delete=models.CASCADE, related_name="instances", verbose_name=_("series")
    )
    sop_class_uid = models.CharField(_("SOP Class UID"), max_length=64)
    instance_number = models.IntegerField(_("instance number"), null=True, blank=True)
    transfer_syntax_uid = models.CharField(_("transfer syntax"), max_length=64, blank=True)
    number_of_frames = models.PositiveIntegerField(_("frames"), default=1)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    blob_key = models.CharField(_("storage key"), max_length=128, unique=True)
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    size_bytes = models.PositiveBigIntegerField(_("size (bytes)"))
    # Is the stored object a Part 10 file (preamble + meta) or a bare dataset?
    has_file_meta = models.BooleanField(default=True)
    # DICOM JSON model (PS3.18 F.2) without bulk data; BulkDataURI values are relative.
    metadata = models.JSONField(_("metadata"))
    received = models.DateTimeField(_("received"), auto_now_add=True)
    source = models.CharField(_("source"), max_length=128, blank=True)
    fixity_checked = models.DateTimeField(null=True, blank=True)
    fixity_ok = models.BooleanField(null=True)

    class Meta:
        verbose_name = _("instance")
        verbose_name_plural = _("instances")
        ordering = ["instance_number"]

    def __str__(self) -> str:
        return self.sop_instance_uid


class PatientConflict(models.Model):
    """An object whose demographics disagree with the stored patient, kept for review.

    The object is stored under the existing patient (its study may already be there); the
    conflict is never merged silently.
    """

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        RESOLVED = "resolved", _("Resolved")

    patient = models.ForeignKey(
        Patient, on_delete=models.CASCADE, related_name="conflicts", verbose_name=_("patient")
    )
    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, related_name="conflicts", verbose_name=_("instance")
    )
    # {"PatientName": {"stored": "...", "received": "..."}, ...}
    differences = models.JSONField(_("differences"))
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True
    )
    resolution_note = models.TextField(_("resolution note"), blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("patient conflict")
        verbose_name_plural = _("patient conflicts")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.patient}: {', '.join(self.differences)}"
