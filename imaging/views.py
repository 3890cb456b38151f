"""Archive pages. Views are thin: they ask the policy, call a service, render."""

from __future__ import annotations

import zipfile
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from . import policies
from .ingest import IngestResult, Outcome, ingest
from .sources import open_zip_members


@login_required
def study_list(request: HttpRequest) -> HttpResponse:
    studies = policies.visible_studies(request.user)
    query = request.GET.get("q", "").strip()
    if query:
        studies = studies.filter(patient__name__icontains=query) | studies.filter(
            patient__patient_id=query
        ) | studies.filter(accession_number=query)
    page = Paginator(studies.order_by("-study_date", "-pk"), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "imaging/study_list.html",
        {"page": page, "query": query, "may_ingest": policies.may_ingest(request.user)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """Staff upload: the page sends one request per file and shows each file's result."""
    if not policies.may_ingest(request.user):
        raise PermissionDenied(_("You may not upload images."))
    if request.method == "GET":
        return render(request, "imaging/upload.html", {"upload_texts": _upload_texts()})
    files = request.FILES.getlist("file")
    if not files:
        return JsonResponse({"error": _("No file was sent.")}, status=400)
    results: list[dict[str, Any]] = []
    for uploaded in files:
        results.extend(_ingest_upload(uploaded, request.user.get_username()))
    accepted = any(r["outcome"] in (Outcome.STORED, Outcome.DUPLICATE) for r in results)
    return JsonResponse({"results": results}, status=200 if accepted else 422)


def _upload_texts() -> dict[str, str]:
    """Strings the upload script shows, translated here so the script needs no catalogue."""
    return {
        "summary": _("%(done)s of %(total)s files sent: %(stored)s stored, %(other)s not stored"),
        "failed": _("failed"),
        "uploading": _("uploading"),
    }


def _ingest_upload(uploaded: UploadedFile, username: str) -> list[dict[str, Any]]:
    name = uploaded.name or "upload"
    source = f"upload:{username}"
    with uploaded.open("rb") as fp:
        if name.lower().endswith(".zip") and zipfile.is_zipfile(fp):
            with open_zip_members(fp) as members:
                return [
                    _describe(f"{name}!{member_name}", ingest(member, source=source))
                    for member_name, member in members
                ]
        return [_describe(name, ingest(fp, source=source))]


def _describe(name: str, result: IngestResult) -> dict[str, Any]:
    messages = {
        Outcome.STORED: _("stored"),
        Outcome.DUPLICATE: _("already in the archive"),
        Outcome.CONFLICT: _("conflict: a different object with this UID is already stored"),
        Outcome.REJECTED: _("rejected"),
    }
    return {
        "name": name,
        "outcome": result.outcome.value,
        "message": messages[result.outcome],
        "reason": result.reason,
        "sop_instance_uid": result.sop_instance_uid,
    }
