"""The patient's privacy pages: their consents, their data exports, the download link.

Only the signed-in patient's own records (``Patient.user``); anyone else's consent or export
is a 404, so existence never leaks. Views are thin: they find the patient's row and call
:mod:`privacy.consent` or :mod:`privacy.export`.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Consent, Purpose
from audit.trail import Actor
from imaging import policies, principals
from imaging.models import Patient

from . import consent as consents
from . import export as exports
from .models import DataExport


def _own_patient(request: HttpRequest, pk: object) -> Patient:
    try:
        pk_int = int(str(pk))
    except ValueError:
        pk_int = 0
    return get_object_or_404(_own_records(request), pk=pk_int)


def _own_records(request: HttpRequest) -> QuerySet[Patient]:
    """The caller's own patient records (only the code's patient in a code session)."""
    return policies.visible_patients(principals.of_request(request)).filter(
        user=request.user.pk)


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    records = [
        {
            "patient": patient,
            "consents": consents.status_by_purpose(patient),
            "history": Consent.objects.filter(patient=patient).order_by("-given", "-pk"),
            "exports": DataExport.objects.filter(patient=patient).order_by("-created")[:10],
        }
        for patient in _own_records(request).order_by("pk")
    ]
    return render(request, "privacy/overview.html",
                  {"records": records, "text_version": consents.CURRENT_TEXT_VERSION})


@login_required
@require_POST
def consent_give(request: HttpRequest) -> HttpResponse:
    patient = _own_patient(request, request.POST.get("patient"))
    purpose = request.POST.get("purpose", "")
    if purpose not in Purpose.values:
        messages.error(request, _("Unknown purpose."))
        return redirect("privacy:overview")
    latest = consents.current(patient, purpose)
    already = (latest is not None and latest.revoked is None
               and latest.text_version == consents.CURRENT_TEXT_VERSION)
    if not already:
        consents.give(patient, purpose, consents.CURRENT_TEXT_VERSION,
                      Consent.Channel.PORTAL, request.user)
    messages.success(request, _("Your consent was recorded."))
    return redirect("privacy:overview")


@login_required
@require_POST
def consent_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    consent = get_object_or_404(Consent, pk=pk, patient__in=_own_records(request))
    consents.revoke(consent, request.user)
    messages.success(request, _("Your consent was revoked."))
    return redirect("privacy:overview")


@login_required
@require_POST
def export_request(request: HttpRequest) -> HttpResponse:
    patient = _own_patient(request, request.POST.get("patient"))
    export = exports.request_export(patient, principals.of_request(request),
                                    language=getattr(request, "LANGUAGE_CODE", ""))
    messages.success(request, _("Your export was requested. It is prepared in the "
                                "background; this page shows when it is ready."))
    return redirect("privacy:export_detail", pk=export.pk)


def _own_export(request: HttpRequest, pk: int) -> DataExport:
    return get_object_or_404(DataExport.objects.select_related("patient"), pk=pk,
                             patient__in=_own_records(request))


@login_required
@require_GET
def export_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "privacy/export_detail.html",
                  {"export": _own_export(request, pk), "link": None})


@login_required
@require_POST
def export_link(request: HttpRequest, pk: int) -> HttpResponse:
    """A fresh link, shown once: only its hash is kept."""
    export = _own_export(request, pk)
    if not export.downloadable:
        return render(request, "privacy/export_detail.html", {"export": export, "link": None},
                      status=409)
    token = exports.issue_link(export, principals.of_request(request))
    link = request.build_absolute_uri(reverse("privacy:export_download", args=[token]))
    response = render(request, "privacy/export_detail.html", {"export": export, "link": link})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def export_download(request: HttpRequest, token: str) -> HttpResponseBase:
    try:
        export, fp = exports.open_download(token, principals.of_request(request),
                                           Actor.from_request(request))
    except (exports.LinkUnknown, exports.NotYours):
        return render(request, "privacy/link_invalid.html", {"expired": False}, status=404)
    except exports.LinkExpired:
        return render(request, "privacy/link_invalid.html", {"expired": True}, status=410)
    filename = f"exams-{export.finished:%Y%m%d}-{export.pk}.zip" if export.finished else (
        f"exams-{export.pk}.zip")
    response = FileResponse(fp, as_attachment=True, filename=filename,
                            content_type="application/zip")
    response["Cache-Control"] = "no-store"
    return response
