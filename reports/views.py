"""The doctor's report pages. Thin: they find the study, call :mod:`reports.service` or
:mod:`reports.reading`, and render.

- ``/reports/studies/<uid>/``: the editor (the current version, its history; save a
  preliminary, finalize, amend).
- ``/reports/<pk>/pdf``: one version's PDF, as stored in its DICOM object.

Whoever may not write the study's report gets a 404 from the editor, and the refusal is
on the trail; so is an unknown study.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import access, policies, principals
from imaging.models import Study

from . import reading, service
from .models import Report

#: The editor's buttons: which write each one asks for.
WRITES: dict[str, Callable[..., Report]] = {
    "save": service.save_preliminary, "finalize": service.finalize, "amend": service.amend}


def _study(request: HttpRequest, study_uid: str, action: AuditAction) -> Study:
    study = Study.objects.select_related("patient").filter(
        study_instance_uid=study_uid).first()
    if study is None:
        record(action, Actor.from_request(request), Target("study", study_uid,
                                                           study_uid=study_uid),
               Outcome.FAILED, reason="no such object")
        raise Http404
    return study


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def editor(request: HttpRequest, study_uid: str) -> HttpResponse:
    principal = principals.of_request(request)
    actor = Actor.from_request(request)
    if request.method == "POST":
        return _write(request, _study(request, study_uid, AuditAction.REPORT))
    study = _study(request, study_uid, AuditAction.VIEW)
    decision = policies.decide(principal, policies.Action.REPORT, study.patient)
    if not decision:
        record(AuditAction.REPORT, actor, Target.study(study), Outcome.DENIED,
               reason=decision.why, detail={"page": "report editor"})
        raise Http404
    access.authorize(principal, actor, AuditAction.VIEW, study,
                     detail={"page": "report editor"})
    return _page(request, study)


def _write(request: HttpRequest, study: Study) -> HttpResponse:
    write = WRITES.get(request.POST.get("action", ""))
    text = service.ReportText(request.POST.get("findings", ""),
                              request.POST.get("impression", ""))
    if write is None:
        return _page(request, study, text=text, status=HTTPStatus.BAD_REQUEST)
    reason = request.POST.get("reason", "")
    extra = {"reason": reason} if write is service.amend else {}
    try:
        write(principals.of_request(request), Actor.from_request(request), study, text, **extra)
    except service.NotAllowed:
        raise Http404 from None
    except service.ReportRefused as refused:
        return _page(request, study, text=text, reason=reason, problem=str(refused),
                     status=_refusal_status(refused))
    return redirect("reports:editor", study.study_instance_uid)


def _refusal_status(refused: service.ReportRefused) -> int:
    if isinstance(refused, service.ReportNotStored):
        return HTTPStatus.SERVICE_UNAVAILABLE
    if isinstance(refused, service.MissingReason):
        return HTTPStatus.BAD_REQUEST
    return HTTPStatus.CONFLICT


def _page(request: HttpRequest, study: Study, *, text: service.ReportText | None = None,
          reason: str = "", problem: str = "", status: int = HTTPStatus.OK) -> HttpResponse:
    user = request.user
    current = service.current_report(study)
    if text is None:
        text = service.ReportText(current.findings, current.impression) if current else \
            service.ReportText("", "")
    name = user.get_full_name().strip()  # type: ignore[union-attr]
    crm = getattr(user, "professional_id", "").strip()
    return render(request, "reports/editor.html", {
        "study": study, "report": current,
        "patient_name": " ".join(study.patient.name.replace("^", " ").split()),
        "history": service.versions(study),
        "report_may_write": True, "text": text, "reason": reason, "problem": problem,
        "missing_signature": service.missing_signature(user),  # type: ignore[arg-type]
        "signature": f"{name} — {crm}" if name and crm else "",
    }, status=status)


@login_required
@require_GET
def report_pdf(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    report = reading.version_or_404(principals.of_request(request),
                                    Actor.from_request(request), AuditAction.DOWNLOAD, pk)
    return pdf_response(report)


def pdf_response(report: Report) -> StreamingHttpResponse:
    """The version's PDF streamed from its stored DICOM object, as a download."""
    chunks, length = reading.open_pdf(report)
    response = StreamingHttpResponse(chunks, content_type="application/pdf")
    response["Content-Length"] = str(length)
    response["Content-Disposition"] = f'attachment; filename="{reading.pdf_filename(report)}"'
    response["Cache-Control"] = "private, no-store"
    return response
