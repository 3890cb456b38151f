"""The break-the-glass page: a doctor opens a record outside her grants, with a reason."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record

from . import access, policies, principals
from .admin_scope import patients_in_scope


@login_required
def break_the_glass(request: HttpRequest) -> HttpResponse:
    principal = principals.of_request(request)
    if not policies.decide(principal, policies.Action.BREAK_GLASS):
        raise PermissionDenied(_("Only doctors may open an emergency access."))
    error = ""
    patient_id = request.POST.get("patient_id", request.GET.get("patient_id", "")).strip()
    reason = request.POST.get("reason", "")
    if request.method == "POST":
        # Only patients of the doctor's clinics: another clinic's look the same as none.
        patient = (patients_in_scope(principal).filter(patient_id=patient_id).first()
                   if patient_id else None)
        if patient is None:
            record(AuditAction.BREAK_GLASS, Actor.from_request(request),
                   Target(level="patient", uid=patient_id[:128]), Outcome.FAILED,
                   reason="no such patient", detail={"reason": reason[:1000]})
            error = _("No patient with this ID in the archive.")
        else:
            try:
                access.break_the_glass(principal, Actor.from_request(request), patient,
                                       reason)
            except access.BreakGlassRefused as exc:
                error = str(exc)
            else:
                messages.warning(request, _(
                    "Emergency access opened for %(hours)s hours. It is recorded and will be "
                    "reviewed by the clinic's administrator."
                ) % {"hours": access.BREAK_GLASS_HOURS})
                return redirect(f"{reverse('imaging:study_list')}?q={patient.patient_id}")
    return render(request, "imaging/break_glass.html",
                  {"error": error, "patient_id": patient_id, "reason": reason,
                   "min_length": access.MIN_REASON_LENGTH})
