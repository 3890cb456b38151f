"""Orders, HL7 peers and the messages received, in Django admin (messages read-only)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Hl7Message, Hl7Peer, ScheduledProcedure


@admin.register(Hl7Peer)
class Hl7PeerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "sending_application", "sending_facility", "host", "clinic",
                    "enabled")
    list_filter = ("enabled", "clinic")
    search_fields = ("name", "sending_application", "host")


@admin.register(ScheduledProcedure)
class ScheduledProcedureAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("accession_number", "patient", "modality", "scheduled_station_ae_title",
                    "scheduled_date", "scheduled_time", "status", "clinic")
    list_filter = ("status", "modality", "clinic")
    search_fields = ("accession_number", "patient__patient_id", "patient__name")
    raw_id_fields = ("patient",)
    readonly_fields = ("created", "updated")


@admin.register(Hl7Message)
class Hl7MessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("received", "message_type", "control_id", "peer", "remote_address",
                    "outcome", "reason")
    list_filter = ("outcome", "message_type", "peer")
    search_fields = ("control_id", "raw")
    readonly_fields = ("peer", "remote_address", "control_id", "message_type", "raw",
                       "outcome", "reason", "received")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
