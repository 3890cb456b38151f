"""The audit trail in Django admin: read-only, filterable, exportable as CSV for a period."""

from __future__ import annotations

import csv
import datetime
from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .csv_cells import safe_row
from .models import AuditEvent, ReadSession
from .trail import Actor, record

CSV_FIELDS = (
    "seq", "at", "username", "role", "peer_ae", "ip", "client", "action", "outcome", "level",
    "object_uid", "patient_ref", "study_uid", "break_glass", "reason", "entry_hash",
)


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_rows(events: QuerySet[AuditEvent]) -> Iterator[str]:
    """CSV lines for ``events``, streamed from the database in chunks; text that a
    spreadsheet would take for a formula is escaped (:mod:`audit.csv_cells`)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_FIELDS)
    for row in events.order_by("seq").values_list(*CSV_FIELDS).iterator(chunk_size=2000):
        yield writer.writerow(safe_row(
            value.isoformat() if isinstance(value, datetime.datetime) else value
            for value in row
        ))


def csv_response(events: QuerySet[AuditEvent], filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_rows(events), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _parse_day(value: str | None) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def within_clinics(request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
    """Entries a clinic admin may read: about her clinics' patients, or by her clinics'
    members. The rest (other clinics, associations, system work) is for superusers."""
    from accounts.models import User
    from imaging.admin_scope import admin_principal

    clinics = admin_principal(request).clinic_ids
    if clinics is None:
        return queryset
    from imaging.models import Patient

    patients = Patient.objects.filter(clinic_id__in=sorted(clinics)).values("pk")
    members = User.objects.filter(clinics__in=sorted(clinics)).values("pk")
    return queryset.filter(Q(patient_pk__in=patients) | Q(user_pk__in=members))


class _TrailAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The trail in admin: read-only, and within the reader's clinics."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return within_clinics(request, super().get_queryset(request))


@admin.register(AuditEvent)
class AuditEventAdmin(_TrailAdmin):
    list_display = ("seq", "at", "username", "peer_ae", "role", "action", "outcome",
                    "level", "patient_ref", "break_glass", "ip")
    list_filter = ("action", "outcome", "break_glass", "role", "level")
    search_fields = ("username", "peer_ae", "patient_ref", "object_uid", "study_uid", "ip")
    date_hierarchy = "at"
    show_full_result_count = False
    actions = ["export_csv"]
    change_list_template = "admin/audit/auditevent/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        export = path("export/", self.admin_site.admin_view(self.export_period),
                      name="audit_auditevent_export")
        return [export, *super().get_urls()]

    def export_period(self, request: HttpRequest) -> HttpResponseBase:
        """CSV of every entry from ``start`` to ``end`` (inclusive days, local time)."""
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        start, end = _parse_day(request.GET.get("start")), _parse_day(request.GET.get("end"))
        if start is None or end is None or end < start:
            return HttpResponse(_("Give start and end dates as YYYY-MM-DD."), status=400,
                                content_type="text/plain; charset=utf-8")
        zone = timezone.get_current_timezone()
        since = datetime.datetime.combine(start, datetime.time.min, zone)
        until = datetime.datetime.combine(end + datetime.timedelta(days=1), datetime.time.min,
                                          zone)
        events = self.get_queryset(request).filter(at__gte=since, at__lt=until)
        record("export", Actor.from_request(request), None,
               detail={"audit_csv": {"start": start.isoformat(), "end": end.isoformat()}})
        return csv_response(events, f"audit-{start}-{end}.csv")

    @admin.action(description=_("Export selected entries as CSV"))
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent]
    ) -> HttpResponseBase:
        record("export", Actor.from_request(request), None,
               detail={"audit_csv": {"selected": queryset.count()}})
        return csv_response(queryset, "audit-selection.csv")


@admin.register(ReadSession)
class ReadSessionAdmin(_TrailAdmin):
    """Viewing sessions: how many reads each counted and when the last was. Read-only: the
    count is written by reads, and made tamper-evident by the closing entry."""

    list_display = ("opened", "last_read", "reads", "username", "peer_ae", "role", "action",
                    "patient_ref", "study_uid", "opened_seq", "closed_seq")
    list_filter = ("action", "role")
    search_fields = ("username", "peer_ae", "patient_ref", "study_uid", "caller")
    date_hierarchy = "opened"
    show_full_result_count = False

