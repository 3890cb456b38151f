"""Orders, HL7 peers, the messages received and the results sent, in Django admin
(messages read-only; a result that failed can be resent).

Within the clinics one belongs to (imaging.admin_scope), as every admin page: a clinic
admin sees her clinic's orders and the messages its EHR sent; messages of no known sender
and results sent are the platform superuser's.
"""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from imaging.admin_scope import ClinicScopedAdmin

from . import results
from .models import (
    Hl7Message,
    Hl7Peer,
    OutboundMessage,
    PerformedProcedureStep,
    ScheduledProcedure,
)

RAW_SHOWN = 300  # characters of a message in the list


@admin.register(Hl7Peer)
class Hl7PeerAdmin(ClinicScopedAdmin):
    clinic_path = "clinic"
    list_display = ("name", "sending_application", "sending_facility", "host", "clinic",
                    "enabled")
    list_filter = ("enabled", "clinic")
    search_fields = ("name", "sending_application", "host")


@admin.register(ScheduledProcedure)
class ScheduledProcedureAdmin(ClinicScopedAdmin):
    clinic_path = "clinic"
    list_display = ("accession_number", "patient", "modality", "scheduled_station_ae_title",
                    "scheduled_date", "scheduled_time", "status", "study_link", "clinic")
    list_filter = ("status", "modality", "clinic")
    search_fields = ("accession_number", "patient__patient_id", "patient__name")
    raw_id_fields = ("patient", "study")
    readonly_fields = ("created", "updated")
    list_select_related = ("patient", "clinic", "study")

    @admin.display(description=_("study"), ordering="study")
    def study_link(self, obj: ScheduledProcedure) -> str:
        """The study the images arrived as, opened through the study page (and so the
        access policy)."""
        if obj.study is None:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse(
            "imaging:study_detail", args=[obj.study.study_instance_uid]), _("open study"))


@admin.register(PerformedProcedureStep)
class PerformedProcedureStepAdmin(ClinicScopedAdmin):
    """What modalities reported (MPPS), read-only: the record of what they said."""

    patient_path = "procedure__patient"  # unscheduled steps: the superuser's

    list_display = ("created", "accession_number", "patient_id", "modality",
                    "station_ae_title", "status", "started", "ended",
                    "discontinuation_reason", "procedure")
    list_filter = ("status", "modality", "station_ae_title")
    search_fields = ("sop_instance_uid", "accession_number", "patient_id")
    list_select_related = ("procedure",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in PerformedProcedureStep._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Hl7Message)
class Hl7MessageAdmin(ClinicScopedAdmin):
    """Every message as received, for review: read-only (the record of what was sent)."""

    clinic_path = "peer__clinic"  # a refused unknown sender's: the superuser's
    list_display = ("received", "message_type", "control_id", "peer", "remote_address",
                    "outcome", "reason", "raw_text")
    list_filter = ("outcome", "message_type")
    search_fields = ("control_id", "raw")
    readonly_fields = ("peer", "remote_address", "control_id", "message_type", "raw",
                       "outcome", "reason", "received")

    def get_list_filter(self, request: HttpRequest) -> Any:
        # The peers of every clinic are the superuser's to choose from, no one else's.
        user = getattr(request, "user", None)
        return (*self.list_filter, "peer") if user is not None and user.is_superuser \
            else self.list_filter

    @admin.display(description=_("message as received"))
    def raw_text(self, obj: Hl7Message) -> str:
        """The message's start, a segment a line, as the EHR sent it (the whole text is on
        its page)."""
        shown = obj.raw[:RAW_SHOWN]
        return format_html('<pre class="hl7">{}{}</pre>', shown.replace("\r", "\n"),
                           "…" if len(obj.raw) > RAW_SHOWN else "")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OutboundMessage)
class OutboundMessageAdmin(ClinicScopedAdmin):
    patient_path = "report__study__patient"
    list_display = ("created", "message_type", "control_id", "result_status", "study_uid",
                    "host", "port", "state", "attempts", "ack_code", "last_error")
    list_filter = ("state", "result_status", "ack_code", "host")
    search_fields = ("control_id", "study_uid", "raw")
    readonly_fields = ("report", "study_uid", "message_type", "control_id", "result_status",
                       "host", "port", "raw", "state", "attempts", "due", "last_error",
                       "ack_code", "ack", "created", "last_attempt", "acknowledged")
    actions = ["resend"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description=_("Resend the selected failed messages"),
                  permissions=["change"])
    def resend(self, request: HttpRequest, queryset: QuerySet[OutboundMessage]) -> None:
        selected = list(queryset.values_list("pk", flat=True))
        count = results.resend(selected)
        self.message_user(request, ngettext(
            "%(count)d message queued to be sent again.",
            "%(count)d messages queued to be sent again.", count) % {"count": count},
            messages.SUCCESS)
        if count < len(selected):
            self.message_user(request, _("Only failed messages are resent; the others were "
                                         "left as they are."), messages.WARNING)
