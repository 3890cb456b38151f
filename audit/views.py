"""The patient's own view of the audit trail: who accessed their exams, and when."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.models import User
from imaging.models import Patient

from . import read_sessions
from .models import AuditEvent


@login_required
def my_access_history(request: HttpRequest) -> HttpResponse:
    patient_pks = list(
        Patient.objects.filter(user=request.user.pk).values_list("pk", flat=True)
    )
    events = AuditEvent.objects.filter(patient_pk__in=patient_pks).order_by("-seq")
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    ids = {e.user_pk for e in page if e.user_pk}
    users = {u.pk: u.get_full_name() or u.username for u in User.objects.filter(pk__in=ids)}
    sessions = read_sessions.opened_by([e.seq for e in page])
    rows = [
        {
            "event": e,
            "session": sessions.get(e.seq),
            "who": users.get(e.user_pk or 0) or e.username or e.peer_ae,
            "is_self": e.user_pk == request.user.pk,
        }
        for e in page
    ]
    return render(request, "audit/my_access_history.html",
                  {"page": page, "rows": rows, "has_records": bool(patient_pks)})
