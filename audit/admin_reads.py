"""Reading patient data in Django admin is on the trail like anywhere else.

:class:`AuditedReadsMixin` goes first in the bases of a ModelAdmin that shows patient data
(imaging, patients, privacy): a list page records one SEARCH entry per patient it shows, a
change page and a history page one VIEW entry for the object. Changes themselves are
django-auditlog's (``audit.model_changes``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from .models import AuditAction, Outcome
from .trail import Actor, Target, record


def target_for(obj: Any) -> Target:
    """The archive object itself, else the patient the row belongs to, else the row."""
    from imaging.access import target_of
    from imaging.models import Instance, Patient, Series, Study

    if isinstance(obj, Patient | Study | Series | Instance):
        return target_of(obj)
    patient = getattr(obj, "patient", None)
    if isinstance(patient, Patient):
        return Target(obj._meta.model_name, str(obj.pk), patient.pk, Target.patient(patient)
                      .patient_ref)
    return Target(obj._meta.model_name, str(obj.pk), patient_ref=str(
        getattr(obj, "patient_ref", "") or getattr(obj, "patient_id", "") or ""))


class AuditedReadsMixin(admin.ModelAdmin):  # type: ignore[type-arg]
    """For ModelAdmins whose pages show patient data: put it first among the bases."""

    def _page(self) -> str:
        opts = self.model._meta
        return f"{opts.app_label}.{opts.model_name}"

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        changelist = (getattr(response, "context_data", None) or {}).get("cl")
        if changelist is None:  # a redirect or an action's answer: nothing listed
            return response
        by_patient: dict[Any, Target] = {}
        for obj in changelist.result_list:
            target = target_for(obj)
            by_patient.setdefault(target.patient_pk or (target.level, target.uid), target)
        detail = {"admin": self._page(), "query": dict(request.GET.items()),
                  "hits": len(changelist.result_list)}
        record(AuditAction.SEARCH, Actor.from_request(request), list(by_patient.values()),
               Outcome.ALLOWED, detail=detail)
        return response

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        self._record_view(request, object_id, "change")
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(self, request: HttpRequest, object_id: str,
                     extra_context: dict[str, Any] | None = None) -> HttpResponse:
        self._record_view(request, object_id, "history")
        return super().history_view(request, object_id, extra_context)

    def _record_view(self, request: HttpRequest, object_id: str, page: str) -> None:
        obj = self.get_object(request, object_id)
        if obj is None:  # admin answers with a redirect and a message; nothing was read
            return
        record(AuditAction.VIEW, Actor.from_request(request), target_for(obj),
               Outcome.ALLOWED, detail={"admin": self._page(), "page": page})
