"""Django admin for the archive index: metadata is read-only, conflicts are reviewed here."""

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import AccessGrant, BreakGlassAccess, Clinic
from audit.admin_reads import AuditedReadsMixin
from audit.trail import Actor

from . import policies, rejection
from .admin_scope import ClinicScopedAdmin, ViewOnlyAdmin, admin_principal
from .models import Instance, Patient, PatientConflict, Rejection, Series, Study


class ReadOnlyAdmin(AuditedReadsMixin, ViewOnlyAdmin, ClinicScopedAdmin):
    """Archive rows are written only by the ingest path; admins look, they do not edit.
    Every look is on the audit trail."""


class StudyInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Study
    fields = ("study_date", "description", "modalities", "num_series", "num_instances")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Patient)
class PatientAdmin(AuditedReadsMixin, ClinicScopedAdmin):
    patient_path = ""
    list_display = ("name", "patient_id", "issuer", "birth_date", "sex", "clinic", "user")
    list_filter = ("clinic",)
    search_fields = ("name", "patient_id")
    readonly_fields = ("patient_id", "issuer", "name", "birth_date", "sex", "created")
    # Linking a portal user and the clinic are the editable fields.
    fields = (*readonly_fields, "clinic", "user")
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

    # With a replica configured, each study shows how many of its objects it holds: counted
    # for the listed page in one query (replica.copies.per_study), not one per row.
    def get_list_display(self, request: HttpRequest) -> Any:
        shown = super().get_list_display(request)
        return (*shown, "replica") if settings.REPLICA_URL else shown

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "replica") if settings.REPLICA_URL else fields

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        if settings.REPLICA_URL:
            from replica.copies import per_study

            studies = list(changelist.result_list)
            counts = per_study([s.pk for s in studies])
            for study in studies:
                study.replica_summary = counts.get(study.pk)
        return changelist

    @admin.display(description=_("replica"))
    def replica(self, obj: Study) -> str:
        from replica.admin import study_replica_text
        from replica.copies import per_study

        if not hasattr(obj, "replica_summary"):  # a change page: one study, one query
            obj.replica_summary = per_study([obj.pk]).get(obj.pk)  # type: ignore[attr-defined]
        return study_replica_text(obj.replica_summary)  # type: ignore[attr-defined]


@admin.register(Series)
class SeriesAdmin(ReadOnlyAdmin):
    patient_path = "study__patient"
    list_display = ("series_instance_uid", "study", "modality", "description", "num_instances")
    list_filter = ("modality",)
    search_fields = ("series_instance_uid", "study__study_instance_uid")
    list_select_related = ("study__patient",)


@admin.register(Instance)
class InstanceAdmin(ReadOnlyAdmin):
    patient_path = "series__study__patient"
    list_display = (
        "sop_instance_uid", "series", "instance_number", "transfer_syntax_uid", "size_bytes",
        "received", "fixity_ok",
    )
    list_filter = ("transfer_syntax_uid", "fixity_ok")
    search_fields = ("sop_instance_uid", "sha256", "series__series_instance_uid")
    list_select_related = ("series__study__patient",)
    show_full_result_count = False


@admin.register(PatientConflict)
class PatientConflictAdmin(AuditedReadsMixin, ClinicScopedAdmin):
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


@admin.register(Rejection)
class RejectionAdmin(AuditedReadsMixin, ClinicScopedAdmin):
    """Rejection notes received or made (IHE IOCM); undone here, one action, audited."""

    patient_path = "study__patient"
    list_display = ("created", "study", "code_meaning", "actor", "via", "rejected_count",
                    "undone")
    list_filter = ("code_value", "undone")
    search_fields = ("kos_sop_instance_uid", "study__study_instance_uid", "actor")
    readonly_fields = ("study", "kos_sop_instance_uid", "code_value", "coding_scheme",
                       "code_meaning", "actor_user", "actor", "via", "created",
                       "rejected_count", "not_found", "undone", "undone_by")
    list_select_related = ("study__patient",)
    actions = ["undo_rejections"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description=_("Undo the selected rejections (serve the instances again)"))
    def undo_rejections(self, request: HttpRequest, queryset: QuerySet[Rejection]) -> None:
        principal = admin_principal(request)
        actor = Actor.from_request(request)
        restored = refused = 0
        for one in queryset.select_related("study__patient").filter(undone=None):
            if not policies.decide(principal, policies.Action.STORE, one.study.patient):
                refused += 1
                continue
            restored += rejection.undo(one.pk, request.user, actor=actor)
        self.message_user(request, _("%(n)d instances are served again.") % {"n": restored})
        if refused:
            self.message_user(request, _("%(n)d rejections were not yours to undo.")
                              % {"n": refused}, level="warning")


@admin.register(Clinic)
class ClinicAdmin(ClinicScopedAdmin):
    """Clinics and their retention rules; a clinic admin sees (and edits) her own."""

    clinic_path = "pk"
    list_display = ("name", "cnes", "retention_years", "minor_retention_age",
                    "evict_local_after_days")
    search_fields = ("name", "cnes")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return admin_principal(request).is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return admin_principal(request).is_superuser


@admin.register(AccessGrant)
class AccessGrantAdmin(ClinicScopedAdmin):
    """Care relationships and explicit grants, given within one's clinics."""

    list_display = ("doctor", "patient", "clinic", "kind", "starts", "ends")
    list_filter = ("kind", "clinic")
    search_fields = ("doctor__username", "patient__name", "patient__patient_id")
    raw_id_fields = ("patient",)
    list_select_related = ("doctor", "patient", "clinic")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        clinics = admin_principal(request).clinic_ids
        return queryset if clinics is None else queryset.filter(clinic_id__in=sorted(clinics))


@admin.register(BreakGlassAccess)
class BreakGlassAccessAdmin(ClinicScopedAdmin):
    """Emergency accesses, listed for the clinic admin's review."""

    list_display = ("opened", "doctor", "patient", "expires", "reviewed", "reviewed_by")
    list_filter = ("reviewed",)
    readonly_fields = ("doctor", "patient", "reason", "opened", "expires", "reviewed_by",
                       "reviewed")
    fields = (*readonly_fields, "review_note")
    list_select_related = ("doctor", "patient")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: BreakGlassAccess, form: Any,
                   change: bool) -> None:
        if obj.reviewed is None:
            obj.reviewed, obj.reviewed_by = timezone.now(), request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)
