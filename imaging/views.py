"""Archive pages. Views are thin: they ask the policy, call a service, render."""

from __future__ import annotations

import zipfile
import zlib
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from audit.trail import Actor
from portal.navigation import staff_page
from viewer import ohif

from . import access, policies, principals, worklist
from .ingest import IngestBatch, IngestResult, Outcome, ingest
from .models import ReportStatus
from .sources import open_zip_members, too_large
from .store_audit import StoreAudit
from .upload_limits import UploadLimits, refusal_before_reading, request_too_large

UPLOAD_BATCH = 32  # ZIP members indexed per database transaction
# What a broken or unsupported ZIP raises while its members are read.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError,
              NotImplementedError, RuntimeError)


@login_required
@staff_page
def study_list(request: HttpRequest) -> HttpResponse:
    """The worklist: the studies the caller may see that the filters find, a page at a
    time (:mod:`imaging.worklist`); one audit entry per page shown."""
    principal = principals.of_request(request)
    may_store = bool(policies.decide(principal, policies.Action.STORE))
    if not policies.decide(principal, policies.Action.BROWSE) and may_store:
        # Technicians bring images in but have no archive to browse.
        return redirect("imaging:upload")
    clinics = worklist.clinic_choices(principal)
    try:
        query = worklist.parse(request.GET, clinics=clinics)
    except worklist.BadQuery as exc:
        return HttpResponse(str(exc), status=HTTPStatus.BAD_REQUEST,
                            content_type="text/plain; charset=utf-8")
    page = worklist.search(principal, query)
    access.record_search(Actor.from_request(request), page.studies, query=query.detail())
    return render(request, "imaging/study_list.html", {
        "page": page, "query": query, "clinics": clinics, "may_ingest": may_store,
        "headers": _sort_headers(query),
        "previous_href": _href(query, page=page.number - 1) if page.has_previous else "",
        "next_href": _href(query, page=page.number + 1) if page.has_next else "",
        "report_statuses": ReportStatus.choices,
        "modalities": worklist.MODALITIES, "body_parts": worklist.BODY_PARTS,
        "sort_choices": worklist.SORT_CHOICES,
        "sort_listed": query.sort in dict(worklist.SORT_CHOICES),
        "more_filters": query.has_filters_beyond_quick(),
        "viewer_installed": ohif.installed(Path(settings.OHIF_DIST)),
    })


def _href(query: worklist.WorklistQuery, **changes: Any) -> str:
    return "?" + urlencode(query.params(**changes))


def _sort_headers(query: worklist.WorklistQuery) -> list[dict[str, str]]:
    """The table's headers; sortable ones link to their sort (reversed when it is the
    current one; dates newest first, text A to Z at the first click)."""
    columns = [
        ("date", _("Date")), ("name", _("Patient")), ("patient_id", _("Patient ID")),
        ("accession", _("Accession")), ("", _("Description")), ("modality", _("Modalities")),
        ("", _("Series")), ("", _("Images")), ("", _("Report")), ("", _("Viewer")),
    ]
    current = query.sort.removeprefix("-")
    descending = query.sort.startswith("-")
    headers = []
    for key, label in columns:
        header = {"label": str(label), "href": "", "sort": ""}
        if key:
            if key == current:
                header["sort"] = "descending" if descending else "ascending"
                target = key if descending else f"-{key}"
            else:
                target = f"-{key}" if key == "date" else key
            header["href"] = _href(query, sort=target, page=1)
        headers.append(header)
    return headers


@csrf_exempt  # checked by _upload, once the upload limits are in place (see below)
@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """Staff upload: the page sends one request per file and shows each file's result.

    The answer is JSON with one result per DICOM object (a ZIP gives one per member).
    It is 200 when at least one object is now in the archive, 422 when none is, and 400
    when the request carries no file at all. A body over ``UPLOAD_MAX_REQUEST_BYTES`` is
    413 and one without a length 411, both before it is read, with ``{"error": ...}``;
    a file over ``INGEST_MAX_OBJECT_BYTES`` is that file's refusal
    (:mod:`imaging.upload_limits`).

    The upload handler that enforces the caps must be installed before the body is parsed,
    and the CSRF middleware parses it to look for the form's token; so, as Django's
    "Modifying upload handlers on the fly" describes, this view is exempt and the inner
    one, :func:`_upload`, is CSRF-protected.
    """
    if not policies.decide(principals.of_request(request), policies.Action.STORE):
        raise PermissionDenied(_("You may not upload images."))
    if request.method == "POST":
        refused = refusal_before_reading(request)
        if refused is not None:
            status, reason = refused
            return JsonResponse({"error": reason}, status=status)
    limits = UploadLimits(request)
    request.upload_handlers = [limits, *request.upload_handlers]
    return _upload(request, limits)


@csrf_protect
def _upload(request: HttpRequest, limits: UploadLimits) -> HttpResponse:
    if request.method == "GET":
        return render(request, "imaging/upload.html", {
            "upload_texts": _upload_texts(),
            "max_request_bytes": settings.UPLOAD_MAX_REQUEST_BYTES,
        })
    files = iter(request.FILES.getlist("file"))
    if limits.too_large:
        # The files parsed before the cap are discarded with the request (Django closes
        # and removes their temporary files); keeping some would half-store the upload.
        return JsonResponse({"error": request_too_large()},
                            status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    received = [r for r in limits.received if r.field_name == "file"]
    if not received:
        return JsonResponse(
            {"error": _("No file was sent. Send each file in a form field named “file”.")},
            status=HTTPStatus.BAD_REQUEST,
        )
    # Browsers send only a file's base name; the page sends the path inside a chosen or
    # dropped folder alongside, so results can say which file of which folder they are.
    paths = request.POST.getlist("path")
    names = paths if len(paths) == len(received) else [r.name or "upload" for r in received]
    results: list[dict[str, Any]] = []
    # Written with the rows; within the uploader's clinics.
    audit = StoreAudit.within(Actor.from_request(request), "upload",
                              principals.of_request(request))
    for entry, name in zip(received, names, strict=True):
        if entry.refusal:
            # Dropped while it streamed (over the object limit): nothing of it was kept.
            results.append(_rejected(name[:1000], entry.refusal))
            continue
        results.extend(
            _ingest_upload(next(files), name[:1000], request.user.get_username(), audit)
        )
    accepted = any(r["outcome"] in (Outcome.STORED, Outcome.DUPLICATE) for r in results)
    return JsonResponse(
        {"results": results},
        status=HTTPStatus.OK if accepted else HTTPStatus.UNPROCESSABLE_ENTITY,
    )


def _upload_texts() -> dict[str, str]:
    """Strings the upload script shows, translated here so the script needs no catalogue."""
    return {
        "summary": _("%(done)s of %(total)s files sent: %(stored)s in the archive, "
                     "%(other)s not stored"),
        "failed": _("upload failed"),
        "session": _("your session has ended; log in again and resend this file"),
        "skipped": _("skipped (not an image: hidden file or DICOMDIR index)"),
        "too_large": request_too_large(),
        "waiting": _("waiting"),
    }


def _ingest_upload(
    uploaded: UploadedFile, name: str, username: str, audit: StoreAudit
) -> list[dict[str, Any]]:
    """Ingest one uploaded file, or every member of an uploaded ZIP (in batches, one
    transaction and one STORE entry per study each), through the one ingest path."""
    source = f"upload:{username}"
    with uploaded.open("rb") as fp:
        if not (name.lower().endswith(".zip") and zipfile.is_zipfile(fp)):
            if (uploaded.size or 0) > settings.INGEST_MAX_OBJECT_BYTES:
                return [_rejected(name, too_large())]
            return [_describe(name, ingest(fp, source=source, audit=audit))]
        fp.seek(0)
        results: list[dict[str, Any]] = []
        batch = IngestBatch(audit)
        names: list[str] = []

        def commit() -> None:
            results.extend(_describe(member_name, result) for member_name, result in
                           zip(names, batch.commit(), strict=True))
            names.clear()

        try:
            with open_zip_members(fp) as members:
                for member in members:
                    names.append(f"{name}!{member.name}")
                    if member.file is None:
                        batch.refuse(member.refusal)
                    else:
                        batch.add(member.file, source=source)
                    if len(batch) >= UPLOAD_BATCH:
                        commit()
        except ZIP_ERRORS as exc:
            commit()
            results.append(_rejected(name, _("the ZIP archive could not be read: %(error)s")
                                     % {"error": exc}))
        else:
            commit()
        if not results:
            results.append(_rejected(name, _("the ZIP archive holds no files")))
        return results


def _describe(name: str, result: IngestResult) -> dict[str, Any]:
    messages = {
        Outcome.STORED: _("stored"),
        Outcome.DUPLICATE: _("already in the archive"),
        Outcome.CONFLICT: _("conflict: a different object with this UID is already stored; "
                            "the stored one was kept"),
        Outcome.REJECTED: _("rejected"),
    }
    return {
        "name": name,
        "outcome": result.outcome.value,
        "message": messages[result.outcome],
        # The message already says all a duplicate or conflict needs; a rejection's reason
        # (from the DICOM parser, in English) tells the user what is wrong with the file.
        "reason": result.reason if result.outcome == Outcome.REJECTED else "",
        "sop_instance_uid": result.sop_instance_uid,
    }


def _rejected(name: str, reason: str) -> dict[str, Any]:
    return {"name": name, "outcome": Outcome.REJECTED.value, "message": _("rejected"),
            "reason": reason, "sop_instance_uid": ""}
