"""Orders from the clinic's EHR/RIS (HL7 v2) and the worklist the modalities read.

A :class:`ScheduledProcedure` is one requested procedure with its one scheduled step, as
the Modality Worklist (PS3.4 K) answers it. :class:`Hl7Peer` is the allow-list of senders,
like DICOM peers; :class:`Hl7Message` keeps every message received, raw, with its answer.
:class:`OutboundMessage` is the queue of results sent to the EHR (``orders.results``).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Hl7Peer(models.Model):
    """An EHR/RIS that may send orders and patient updates, and the clinic it feeds.

    Recognised by MSH-3/MSH-4 (sending application and facility) *and* the address it
    connects from: the MSH is easy to forge, as AE titles are.
    """

    name = models.CharField(_("name"), max_length=100, unique=True)
    host = models.CharField(
        _("host"), max_length=255,
        help_text=_("IP addresses or host names the sender connects from, separated by spaces"))
    sending_application = models.CharField(_("sending application (MSH-3)"), max_length=180)
    sending_facility = models.CharField(_("sending facility (MSH-4)"), max_length=180,
                                        blank=True,
                                        help_text=_("empty: any facility"))
    clinic = models.ForeignKey("accounts.Clinic", on_delete=models.PROTECT,
                               related_name="hl7_peers", verbose_name=_("clinic"),
                               help_text=_("the clinic whose patients and orders it feeds"))
    enabled = models.BooleanField(_("enabled"), default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("HL7 peer")
        verbose_name_plural = _("HL7 peers")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.sending_application}@{self.host})"

    def hosts(self) -> list[str]:
        return self.host.replace(",", " ").split()


class ScheduledProcedure(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        IN_PROGRESS = "in_progress", _("In progress")
        COMPLETED = "completed", _("Completed")
        CANCELLED = "cancelled", _("Cancelled")

    class Priority(models.TextChoices):
        ROUTINE = "ROUTINE", _("Routine")
        HIGH = "HIGH", _("High")
        STAT = "STAT", _("Stat")
        LOW = "LOW", _("Low")

    patient = models.ForeignKey("imaging.Patient", on_delete=models.PROTECT,
                                related_name="scheduled_procedures",
                                verbose_name=_("patient"))
    clinic = models.ForeignKey("accounts.Clinic", on_delete=models.PROTECT,
                               related_name="scheduled_procedures", verbose_name=_("clinic"))
    accession_number = models.CharField(_("accession number"), max_length=16)
    requested_procedure_id = models.CharField(_("requested procedure ID"), max_length=16,
                                              blank=True)
    requested_procedure_description = models.CharField(
        _("requested procedure"), max_length=64, blank=True)
    modality = models.CharField(_("modality"), max_length=16)
    scheduled_station_ae_title = models.CharField(_("scheduled station AE title"),
                                                  max_length=16, blank=True)
    scheduled_date = models.DateField(_("scheduled date"), db_index=True)
    scheduled_time = models.TimeField(_("scheduled time"), null=True, blank=True)
    referring_physician = models.CharField(_("referring physician"), max_length=324,
                                           blank=True)
    priority = models.CharField(_("priority"), max_length=8, choices=Priority.choices,
                                default=Priority.ROUTINE)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices,
                              default=Status.SCHEDULED, db_index=True)
    placer_order_number = models.CharField(_("placer order number"), max_length=64,
                                           blank=True)
    filler_order_number = models.CharField(_("filler order number"), max_length=64,
                                           blank=True)
    # The images of the order, once they arrive with its accession number (orders.studies).
    study = models.ForeignKey("imaging.Study", null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="orders",
                              verbose_name=_("study"))
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("scheduled procedure")
        verbose_name_plural = _("scheduled procedures")
        ordering = ["scheduled_date", "scheduled_time"]
        constraints = [
            # An accession number names one order within a clinic (the modality copies it
            # into the images, which is how they find their order again).
            models.UniqueConstraint(fields=["clinic", "accession_number"],
                                    name="orders_unique_accession_per_clinic"),
        ]

    def __str__(self) -> str:
        return f"{self.accession_number} {self.modality} {self.scheduled_date}"


class PerformedProcedureStep(models.Model):
    """One Modality Performed Procedure Step (PS3.4 F) a modality reported by N-CREATE and
    N-SET: what it did for which order. ``procedure`` is empty for an unscheduled step (no
    order matched); ``attributes`` keeps the dataset as last set, for review."""

    class Status(models.TextChoices):
        IN_PROGRESS = "IN PROGRESS", _("In progress")
        COMPLETED = "COMPLETED", _("Completed")
        DISCONTINUED = "DISCONTINUED", _("Discontinued")

    sop_instance_uid = models.CharField(_("SOP Instance UID"), max_length=64, unique=True)
    procedure = models.ForeignKey(ScheduledProcedure, null=True, blank=True,
                                  on_delete=models.SET_NULL,
                                  related_name="performed_steps",
                                  verbose_name=_("scheduled procedure"))
    accession_number = models.CharField(_("accession number"), max_length=16, blank=True)
    requested_procedure_id = models.CharField(_("requested procedure ID"), max_length=16,
                                              blank=True)
    study_instance_uid = models.CharField(_("Study Instance UID"), max_length=64, blank=True)
    patient_id = models.CharField(_("patient ID"), max_length=64, blank=True)
    modality = models.CharField(_("modality"), max_length=16, blank=True)
    station_ae_title = models.CharField(_("performing station AE title"), max_length=16,
                                        blank=True)
    calling_ae_title = models.CharField(_("reported by (AE title)"), max_length=16,
                                        blank=True)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    ended = models.DateTimeField(_("ended"), null=True, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices,
                              default=Status.IN_PROGRESS, db_index=True)
    discontinuation_reason = models.CharField(_("reason discontinued"), max_length=200,
                                              blank=True)
    #: [{"series_instance_uid": ..., "images": [SOP Instance UIDs]}]
    performed_series: models.JSONField[Any, Any] = models.JSONField(
        _("performed series"), default=list, blank=True)
    attributes: models.JSONField[Any, Any] = models.JSONField(
        _("attributes as received"), default=dict, blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("performed procedure step")
        verbose_name_plural = _("performed procedure steps")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.accession_number or self.sop_instance_uid} {self.status}"


class Hl7Message(models.Model):
    """One message received, kept as it came, with the acknowledgement it was given."""

    class Outcome(models.TextChoices):
        ACCEPTED = "AA", _("Accepted (AA)")
        ERROR = "AE", _("Error (AE)")
        REJECTED = "AR", _("Rejected (AR)")

    peer = models.ForeignKey(Hl7Peer, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="messages", verbose_name=_("peer"))
    remote_address = models.CharField(_("from (IP)"), max_length=64, blank=True)
    control_id = models.CharField(_("control ID (MSH-10)"), max_length=64, blank=True,
                                  db_index=True)
    message_type = models.CharField(_("type (MSH-9)"), max_length=32, blank=True)
    raw = models.TextField(_("message as received"))
    outcome = models.CharField(_("outcome"), max_length=2, choices=Outcome.choices)
    reason = models.TextField(_("reason"), blank=True)
    received = models.DateTimeField(_("received"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("HL7 message")
        verbose_name_plural = _("HL7 messages")
        ordering = ["-received"]

    def __str__(self) -> str:
        return f"{self.message_type} {self.control_id} {self.outcome}"


class OutboundMessage(models.Model):
    """One HL7 message to the EHR (an ``ORU^R01`` for a final report version), kept as
    sent with where it goes and how its delivery went.

    Written in the transaction that makes the report final, so a crash never loses one;
    sent after the commit (``orders.results.send``). ``due`` is when a worker may next take
    it: after a failed attempt, the end of its backoff; while an attempt runs, its lease.
    """

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENT = "sent", _("Sent, awaiting acknowledgement")
        ACKNOWLEDGED = "acknowledged", _("Acknowledged")
        FAILED = "failed", _("Failed")

    # CASCADE: purging the patient takes her reports, and with them what was to be sent.
    report = models.ForeignKey("reports.Report", on_delete=models.CASCADE,
                               related_name="hl7_results", verbose_name=_("report"))
    study_uid = models.CharField(_("Study Instance UID"), max_length=64, db_index=True)
    message_type = models.CharField(_("type (MSH-9)"), max_length=32)
    control_id = models.CharField(_("control ID (MSH-10)"), max_length=64, unique=True)
    result_status = models.CharField(_("result status (OBR-25)"), max_length=1)
    host = models.CharField(_("destination host"), max_length=255)
    port = models.PositiveIntegerField(_("destination port"))
    raw = models.TextField(_("message as sent"))
    state = models.CharField(_("state"), max_length=16, choices=State.choices,
                             default=State.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    due = models.DateTimeField(_("next attempt"), default=timezone.now, db_index=True)
    last_error = models.TextField(_("last error"), blank=True)
    ack_code = models.CharField(_("acknowledgement code (MSA-1)"), max_length=2, blank=True)
    ack = models.TextField(_("acknowledgement received"), blank=True)
    created = models.DateTimeField(_("queued"), auto_now_add=True)
    last_attempt = models.DateTimeField(_("last attempt"), null=True, blank=True)
    acknowledged = models.DateTimeField(_("acknowledged at"), null=True, blank=True)

    class Meta:
        verbose_name = _("HL7 message sent")
        verbose_name_plural = _("HL7 messages sent")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.message_type} {self.control_id} {self.state}"

    @property
    def destination(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
