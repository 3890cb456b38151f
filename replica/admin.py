"""Admin for the copies: what the replica holds, what is waiting and what failed.

Read-only: copies are written by ingest and replication. The list page leads with the
counts by state and the replication lag (age of the oldest copy not yet verified); the
study list gets a column with the same counts per study when a replica is configured.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from imaging.admin_scope import ClinicScopedAdmin, ViewOnlyAdmin

from . import copies
from .models import Copy, DrillReport, IntegrityAlert


def lag_text(lag: datetime.timedelta | None) -> str:
    if lag is None:
        return ""
    if lag < datetime.timedelta(minutes=1):
        seconds = int(lag.total_seconds())
        return ngettext("%(seconds)d second", "%(seconds)d seconds", seconds) % {
            "seconds": seconds}
    return timesince(datetime.datetime.now(datetime.UTC) - lag)


@admin.register(Copy)
class CopyAdmin(ViewOnlyAdmin, ClinicScopedAdmin):
    patient_path = "instance__series__study__patient"
    list_display = ("instance_id", "tier", "state", "key", "attempts", "written_at",
                    "verified_at", "last_error")
    list_filter = ("tier", "state")
    search_fields = ("key",)
    show_full_result_count = False

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        summary = copies.summary(self.get_queryset(request))
        context = {"replica": summary, "replica_lag": lag_text(summary.lag),
                   **(extra_context or {})}
        return super().changelist_view(request, context)


class RepairedFilter(admin.SimpleListFilter):
    title = _("repaired")
    parameter_name = "repaired"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("no", _("Not repaired")), ("yes", _("Repaired"))]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() in ("yes", "no"):
            return queryset.filter(repaired_at__isnull=self.value() == "no")
        return queryset


@admin.register(IntegrityAlert)
class IntegrityAlertAdmin(ViewOnlyAdmin, ClinicScopedAdmin):
    """Read-only: alerts are raised and closed by fixity and repair, never by hand."""

    patient_path = "instance__series__study__patient"
    list_display = ("found_at", "instance_id", "tier", "kind", "repaired_at", "repaired_from")
    list_filter = (RepairedFilter, "tier", "kind", "repaired_from")
    readonly_fields = ("instance", "tier", "kind", "detail", "found_at", "repaired_at",
                       "repaired_from")
    fields = readonly_fields
    date_hierarchy = "found_at"


def open_alerts(request: HttpRequest) -> int | None:
    """How many unrepaired alerts the admin index should warn ``request``'s user about
    (None: the user may not see alerts)."""
    user = getattr(request, "user", None)
    if user is None or not user.has_perm("replica.view_integrityalert"):
        return None
    model_admin = admin.site.get_model_admin(IntegrityAlert)
    return int(model_admin.get_queryset(request).filter(repaired_at__isnull=True).count())


def study_replica_text(summary: copies.Summary | None) -> str:
    """A study's replica column: "12 verified", or the counts that are not yet."""
    if summary is None:
        return str(_("no copies"))
    n = summary.verified
    parts = [ngettext("%(count)d verified", "%(count)d verified", n) % {"count": n}]
    if n := summary.pending:
        parts.append(ngettext("%(count)d pending", "%(count)d pending", n) % {"count": n})
    if n := summary.failed:
        parts.append(ngettext("%(count)d failed", "%(count)d failed", n) % {"count": n})
    return ", ".join(parts)


@admin.register(DrillReport)
class DrillReportAdmin(ViewOnlyAdmin):
    """Read-only: reports are written by the drills (``manage.py restore_drill`` and the
    beat task). Failures list instance ids and object keys, never patient data."""

    list_display = ("started", "ok", "studies", "objects_checked", "bytes_checked",
                    "seconds", "failure_count")
    list_filter = ("ok",)
    date_hierarchy = "started"
    fields = ("started", "finished", "ok", "studies", "objects_checked", "bytes_checked",
              "seconds", "failure_count", "failures")
    readonly_fields = fields
