"""The archive index: patients, studies, series and instances.

The rows are the index; the DICOM files themselves are blobs in the ``dicom`` storage under
opaque keys (see ``imaging.blobs``), never under patient or UID paths.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .search_text import SearchTextField

BODY_PARTS_LENGTH = 128


# --- what is served: rejected objects are not (IHE IOCM, see imaging.rejection) -------------
#
# The default managers hide rejected instances, and series and studies whose every instance
# is rejected, so no read path (QIDO, WADO, C-FIND, C-GET/C-MOVE, pages, downloads, shares)
# can forget it; related managers (``study.series``, ``series.instances``) inherit it.
# ``all_objects`` is for what must see everything: ingest, fixity, replication, retention.


class VisibleInstances(models.Manager["Instance"]):
    def get_queryset(self) -> models.QuerySet[Instance]:
        return super().get_queryset().filter(rejection__isnull=True)


#: A series or study is served unless it had instances and all of them are rejected (an
#: empty one, such as a study created ahead of its images, stays).
SERVED = Q(num_instances__gt=0) | Q(rejected_instances=0)


class VisibleSeries(models.Manager["Series"]):
    def get_queryset(self) -> models.QuerySet[Series]:
        return super().get_queryset().filter(SERVED)


class VisibleStudies(models.Manager["Study"]):
    def get_queryset(self) -> models.QuerySet[Study]:
        return super().get_queryset().filter(SERVED)


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
    # Instances as served: rejected ones are counted apart (imaging.rejection).
    num_instances = models.PositiveIntegerField(_("instances"), default=0)
    size_bytes = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    rejected_instances = models.PositiveIntegerField(_("rejected instances"), default=0)
    report_status = models.CharField(
        _("report status"), max_length=16, choices=ReportStatus.choices,
        default=ReportStatus.NONE, db_index=True,
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    # Everything, rejected or not; ``objects`` (the default manager) is what is served.
    all_objects = models.Manager()
    objects = VisibleStudies()

    class Meta:
        verbose_name = _("study")
        verbose_name_plural = _("studies")
        default_manager_name = "objects"
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
    rejected_instances = models.PositiveIntegerField(_("rejected instances"), default=0)
    created = models.DateTimeField(auto_now_add=True)

    # Everything, rejected or not; ``objects`` (the default manager) is what is served.
    all_objects = models.Manager()
    objects = VisibleSeries()

    class Meta:
        verbose_name = _("series")
        verbose_name_plural = _("series")
        default_manager_name = "objects"
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
    # Rejected by a rejection note (a KOS of CID 7011; the note's own KOS carries its own):
    # kept, but not served (imaging.rejection).
    rejection = models.ForeignKey(
        "Rejection", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="instances", verbose_name=_("rejected by"),
    )

    # Everything, rejected or not; ``objects`` (the default manager) is what is served.
    all_objects = models.Manager()
    objects = VisibleInstances()

    class Meta:
        verbose_name = _("instance")
        verbose_name_plural = _("instances")
        default_manager_name = "objects"
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


class Rejection(models.Model):
    """A rejection note (IHE IOCM): a Key Object Selection whose title is one of CID 7011,
    received or made from the study page, and what it rejected.

    Who sent it, why, when, by which KOS; the instances it rejected point here
    (``Instance.rejection``), the KOS itself too. ``not_found`` lists the references that
    matched nothing of the note's own study and patient (never rejected elsewhere).
    """

    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, related_name="rejections", verbose_name=_("study")
    )
    kos_sop_instance_uid = models.CharField(_("rejection note (KOS)"), max_length=64,
                                            unique=True)
    code_value = models.CharField(_("code"), max_length=16)
    coding_scheme = models.CharField(_("coding scheme"), max_length=16, default="DCM")
    code_meaning = models.CharField(_("reason"), max_length=128)
    #: Who: a portal account, a DICOM peer (its AE title), or the system.
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", verbose_name=_("rejected by (account)"),
    )
    actor = models.CharField(_("rejected by"), max_length=128, blank=True)
    via = models.CharField(_("received by"), max_length=32, blank=True)
    created = models.DateTimeField(_("rejected"), auto_now_add=True)
    rejected_count = models.PositiveIntegerField(_("instances rejected"), default=0)
    not_found = models.JSONField(_("references not found"), default=list, blank=True)
    undone = models.DateTimeField(_("undone"), null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", verbose_name=_("undone by"),
    )

    class Meta:
        verbose_name = _("rejection")
        verbose_name_plural = _("rejections")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.code_meaning} ({self.kos_sop_instance_uid})"
