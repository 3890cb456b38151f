"""Django admin for the archive index: metadata is read-only, conflicts are reviewed here."""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from audit.admin_reads import AuditedReadsMixin

from .models import Instance, Patient, PatientConflict, Series, Study


class ReadOnlyAdmin(AuditedReadsMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """Archive rows are written only by the ingest path; admins look, they do not edit.
    Every look is on the audit trail."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class StudyInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Study
    fields = ("study_date", "description", "modalities", "num_series", "num_instances")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Patient)
class PatientAdmin(AuditedReadsMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "patient_id", "issuer", "birth_date", "sex", "user")
    search_fields = ("name", "patient_id")
    readonly_fields = ("patient_id", "issuer", "name", "birth_date", "sex", "created")
    fields = (*readonly_fields, "user")  # linking a portal user is the one editable field
    raw_id_fields = ("user",)
    inlines = [StudyInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SeriesInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Series
    fields = ("series_number", "modality", "description", "body_part", "num_instances")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Study)
class StudyAdmin(ReadOnlyAdmin):
    list_display = (
        "study_date", "patient", "description", "modalities", "accession_number",
        "num_series", "num_instances",
    )
    list_filter = ("modalities", "study_date")
    search_fields = (
        "study_instance_uid", "accession_number", "patient__name", "patient__patient_id",
    )
    date_hierarchy = "study_date"
    list_select_related = ("patient",)
    inlines = [SeriesInline]


@admin.register(Series)
class SeriesAdmin(ReadOnlyAdmin):
    list_display = ("series_instance_uid", "study", "modality", "description", "num_instances")
    list_filter = ("modality",)
    search_fields = ("series_instance_uid", "study__study_instance_uid")
    list_select_related = ("study__patient",)


@admin.register(Instance)
class InstanceAdmin(ReadOnlyAdmin):
    list_display = (
        "sop_instance_uid", "series", "instance_number", "transfer_syntax_uid", "size_bytes",
        "received", "fixity_ok",
    )
    list_filter = ("transfer_syntax_uid", "fixity_ok")
    search_fields = ("sop_instance_uid", "sha256", "series__series_instance_uid")
    list_select_related = ("series__study__patient",)
    show_full_result_count = False


@admin.register(PatientConflict)
class PatientConflictAdmin(AuditedReadsMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("created", "patient", "instance", "status")
    list_filter = ("status",)
    readonly_fields = ("patient", "instance", "differences", "created", "resolved_by")
    fields = (*readonly_fields, "status", "resolution_note")
    actions = ["mark_resolved"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: PatientConflict, form: Any, change: bool
    ) -> None:
        if obj.status == PatientConflict.Status.RESOLVED and obj.resolved_by_id is None:
            obj.resolved_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    @admin.action(description=_("Mark selected conflicts as resolved"))
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[PatientConflict]) -> None:
        queryset.filter(status=PatientConflict.Status.OPEN).update(
            status=PatientConflict.Status.RESOLVED, resolved_by=request.user,
            resolution_note=f"Resolved in bulk on {timezone.now():%Y-%m-%d}",
        )
