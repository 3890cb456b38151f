"""The study's report, one row per version.

Each version is also a DICOM object in the study (an Encapsulated PDF stored through
ingest, :attr:`Report.instance`), and stored objects are immutable: a new text is a new
version that supersedes the current one, never an edit. The versions of a study form one
chain through :attr:`Report.supersedes`; exactly one of them is current (not superseded).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from imaging.models import Instance, Study


class Report(models.Model):
    class Status(models.TextChoices):
        PRELIMINARY = "preliminary", _("Preliminary")
        FINAL = "final", _("Final")

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="reports",
                              verbose_name=_("study"))
    version = models.PositiveIntegerField(_("version"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices)
    findings = models.TextField(_("findings"), blank=True)
    impression = models.TextField(_("impression"), blank=True)
    # PROTECT: a report's author is on the audit trail, and users on the trail are
    # deactivated, never deleted (audit.actors).
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                               related_name="reports", verbose_name=_("author"))
    # As the doctor signed, whatever her profile says later.
    author_name = models.CharField(_("signed by"), max_length=300)
    author_professional_id = models.CharField(_("professional registration (CRM)"),
                                              max_length=32)
    created = models.DateTimeField(_("written"))
    signed = models.DateTimeField(_("signed"), null=True, blank=True)
    supersedes = models.OneToOneField("self", null=True, blank=True, on_delete=models.CASCADE,
                                      related_name="superseded_by",
                                      verbose_name=_("supersedes"))
    superseded = models.DateTimeField(_("superseded"), null=True, blank=True)
    # A final version that replaces an earlier final one (what the patient is told).
    amendment = models.BooleanField(_("amends a final report"), default=False)
    # Why the doctor amended the final report: said on the page, in the PDF and the trail.
    amendment_reason = models.TextField(_("reason for the amendment"), blank=True)
    # The stored DICOM object of this version (its SOP Instance UID, its PDF). CASCADE:
    # a purge of the patient takes the objects and their reports together.
    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="report",
                                    verbose_name=_("DICOM object"))

    class Meta:
        verbose_name = _("report")
        verbose_name_plural = _("reports")
        ordering = ["study", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["study", "version"],
                                    name="reports_one_row_per_version"),
            models.UniqueConstraint(fields=["study"], condition=Q(superseded__isnull=True),
                                    name="reports_one_current_version_per_study"),
        ]

    def __str__(self) -> str:
        return f"{self.study} v{self.version} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status == self.Status.FINAL

    @property
    def is_current(self) -> bool:
        return self.superseded is None

    @property
    def signature(self) -> str:
        """The signature line: "Dora Lima — CRM-RS 12345"."""
        return f"{self.author_name} — {self.author_professional_id}"
