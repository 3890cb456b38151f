"""LGPD administration: consents (revoked, never deleted), exports, legal holds, purge review
and tombstones. Every change goes through the services in this app."""

from __future__ import annotations

from typing import Any

from auditlog.registry import auditlog
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.models import Consent
from audit.admin_reads import AuditedReadsMixin
from imaging import policies
from imaging.admin_scope import ClinicScopedAdmin
from imaging.principals import as_principal

from . import consent as consents
from . import retention
from .models import DataExport, LegalHold, PendingBlobDeletion, PurgeRequest, Tombstone

# Normally registered by audit.model_changes already; consent changes must be on record.
if not auditlog.contains(Consent):
    auditlog.register(Consent)


class _ReadOnly(ClinicScopedAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _Active(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"
    field = "revoked"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("active", _("active")), ("ended", _("revoked or lifted"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "active":
            return queryset.filter(**{f"{self.field}__isnull": True})
        if self.value() == "ended":
            return queryset.filter(**{f"{self.field}__isnull": False})
        return queryset


class _ConsentState(_Active):
    field = "revoked"


class _HoldState(_Active):
    field = "lifted"


@admin.register(Consent)
class ConsentAdmin(AuditedReadsMixin, ClinicScopedAdmin):
    """Paper and reception consents are added here; none is ever edited or deleted."""

    list_display = ("patient", "purpose", "text_version", "given", "channel", "recorded_by",
                    "revoked")
    list_filter = ("purpose", "channel", _ConsentState, "text_version")
    search_fields = ("patient__name", "patient__patient_id")
    date_hierarchy = "given"
    list_select_related = ("patient", "recorded_by")
    autocomplete_fields = ("patient",)
    fields = ("patient", "purpose", "text_version", "channel", "given", "recorded_by",
              "revoked")
    actions = ["revoke_selected"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ("recorded_by", "revoked")
        return self.fields

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"text_version": consents.CURRENT_TEXT_VERSION,
                "channel": Consent.Channel.PAPER}

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Consent, form: Any, change: bool) -> None:
        if change:
            return
        given = consents.give(obj.patient, obj.purpose, obj.text_version, obj.channel,
                              request.user)
        if obj.given and obj.given != given.given:  # a paper form signed on an earlier day
            Consent.objects.filter(pk=given.pk).update(given=obj.given)
        obj.pk = given.pk

    @admin.action(description=_("Revoke the selected consents"))
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Consent]) -> None:
        count = 0
        for consent in queryset.filter(revoked__isnull=True):
            consents.revoke(consent, request.user)
            count += 1
        self.message_user(request, ngettext("%d consent revoked.", "%d consents revoked.",
                                            count) % count)


@admin.register(DataExport)
class DataExportAdmin(AuditedReadsMixin, _ReadOnly):
    list_display = ("pk", "patient", "requested_by", "status", "created", "finished",
                    "num_instances", "size_bytes", "expires", "downloads")
    list_filter = ("status",)
    search_fields = ("patient__name", "patient__patient_id")
    list_select_related = ("patient", "requested_by")
    exclude = ("token_hash",)


@admin.register(LegalHold)
class LegalHoldAdmin(AuditedReadsMixin, ClinicScopedAdmin):
    list_display = ("pk", "patient", "study", "reason", "placed_by", "placed", "lifted",
                    "lifted_by")
    list_filter = (_HoldState,)
    search_fields = ("patient__name", "patient__patient_id", "study__study_instance_uid",
                     "study__accession_number", "reason")
    autocomplete_fields = ("patient", "study")
    fields = ("patient", "study", "reason", "placed_by", "placed", "lifted", "lifted_by")
    actions = ["lift_selected"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ("placed_by", "placed", "lifted", "lifted_by")
        return self.fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: LegalHold, form: Any, change: bool) -> None:
        if change:
            return
        hold = retention.place_hold(reason=obj.reason, by=request.user, patient=obj.patient,
                                    study=obj.study)
        obj.pk = hold.pk

    @admin.action(description=_("Lift the selected holds"))
    def lift_selected(self, request: HttpRequest, queryset: QuerySet[LegalHold]) -> None:
        count = 0
        for hold in queryset.filter(lifted__isnull=True):
            retention.lift_hold(hold, request.user)
            count += 1
        self.message_user(request, ngettext("%d hold lifted.", "%d holds lifted.",
                                            count) % count)


@admin.register(PurgeRequest)
class PurgeRequestAdmin(AuditedReadsMixin, _ReadOnly):
    list_display = ("patient_ref", "patient", "last_exam", "retention_end", "listed_at",
                    "status", "approved_by", "approved_at")
    list_filter = ("status",)
    search_fields = ("patient_ref",)
    date_hierarchy = "retention_end"
    list_select_related = ("patient", "approved_by")
    actions = ["approve_and_purge", "cancel_selected"]

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return bool(policies.decide(as_principal(request.user), policies.Action.DELETE))

    @admin.action(description=_("Approve and purge the selected patients…"),
                  permissions=["purge"])
    def approve_and_purge(self, request: HttpRequest,
                          queryset: QuerySet[PurgeRequest]) -> TemplateResponse | None:
        """Asks for a reason on a confirmation page, then purges each patient."""
        open_requests = queryset.filter(status__in=PurgeRequest.OPEN)
        reason = request.POST.get("reason", "").strip()
        if request.POST.get("confirm") == "yes" and reason:
            purged = 0
            for purge_request in open_requests:
                try:
                    retention.approve(purge_request.pk, request.user, reason)  # type: ignore[arg-type]
                    retention.purge(purge_request.pk, request.user, reason)  # type: ignore[arg-type]
                except retention.PurgeRefused as exc:
                    self.message_user(
                        request, _("%(patient)s was not purged: %(why)s")
                        % {"patient": purge_request.patient_ref, "why": exc},
                        messages.WARNING)
                else:
                    purged += 1
            self.message_user(request, ngettext("%d patient purged.", "%d patients purged.",
                                                purged) % purged)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": _("Approve and purge"),
            "opts": self.model._meta,
            "requests": open_requests,
            "queryset": open_requests,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "reason": reason,
            "reason_missing": request.POST.get("confirm") == "yes" and not reason,
            "held": [r for r in open_requests if r.patient and retention.is_held(r.patient)],
        }
        return TemplateResponse(request, "admin/privacy/purgerequest/approve_and_purge.html",
                                context)

    @admin.action(description=_("Cancel the selected requests (they are listed again later)"),
                  permissions=["purge"])
    def cancel_selected(self, request: HttpRequest,
                        queryset: QuerySet[PurgeRequest]) -> None:
        for purge_request in queryset.filter(status__in=PurgeRequest.OPEN):
            retention.cancel(purge_request.pk, request.user)
        self.message_user(request, _("Cancelled."))


@admin.register(Tombstone)
class TombstoneAdmin(AuditedReadsMixin, _ReadOnly):
    superuser_only = True
    list_display = ("patient_id", "issuer", "initials", "clinic", "num_instances",
                    "last_exam", "retention_end", "approved_by_name", "purged_at",
                    "blobs_deleted")
    search_fields = ("patient_id", "studies")
    date_hierarchy = "purged_at"


@admin.register(PendingBlobDeletion)
class PendingBlobDeletionAdmin(_ReadOnly):
    superuser_only = True
    list_display = ("storage", "key", "tombstone", "created", "attempts", "last_error")
    actions = ["retry"]

    @admin.action(description=_("Try deleting these files again"))
    def retry(self, request: HttpRequest, queryset: QuerySet[PendingBlobDeletion]) -> None:
        tombstones = set(queryset.values_list("tombstone_id", flat=True))
        failed = 0
        for tombstone_id in tombstones:
            failed += retention.delete_pending_blobs(tombstone_id)[1]
        self.message_user(request, _("%d file(s) still could not be deleted.") % failed,
                          messages.WARNING if failed else messages.SUCCESS)
