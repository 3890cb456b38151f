"""The patient portal's pages. Thin: they parse, call :mod:`patients.codes` or
:mod:`patients.images`, and render.

- ``/patient/``: sign in with an account, or with the receipt code and birth date.
- ``/patient/exams/``: the patient's exams; ``/patient/exams/<uid>/``: one exam's images.
- ``/patient/exams/<uid>/images/<sop>/<frame>.jpg``: one rendered frame.
- ``/patient/exams/<uid>/report/``: the exam's final report, to read; ``report.pdf``: its
  PDF, as stored in the archive. A preliminary report is never shown to the patient
  (:mod:`reports.reading`).

Exams come from :func:`imaging.policies.visible_studies` (narrowed to the code's patient
for a code sign-in); an exam page goes through :func:`imaging.access.get_or_404`, so an
exam that is not the patient's is a 404, and the refusal is on the record.
"""

from __future__ import annotations

import datetime
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from accounts import second_factor
from accounts.models import User
from audit import read_sessions
from audit.models import AuditAction
from audit.trail import Actor, Target
from imaging import access, policies, principals
from imaging.models import Instance, Study
from reports import reading
from reports.views import pdf_response

from . import codes, images, throttle
from .codes import CodeRefused, Refusal

STATUS = {
    Refusal.WRONG: 400, Refusal.EXPIRED: 410, Refusal.REVOKED: 410, Refusal.LOCKED: 403,
    Refusal.HAS_ACCOUNT: 403, Refusal.TOO_MANY: 429, Refusal.OWN_CODE: 403,
}
LOGIN = reverse_lazy("patients:login")
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y")


def parse_birth_date(text: str) -> datetime.date | None:
    """A date as the browser's date field sends it, or as typed by hand (day first)."""
    text = text.strip()
    for fmt in DATE_FORMATS:
        try:
            return datetime.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


@never_cache
@require_http_methods(["GET", "POST"])
def patient_login(request: HttpRequest) -> HttpResponse:
    form = {"code": "", "birth_date": ""}
    refusal = ""
    if request.method == "POST":
        form = {"code": request.POST.get("code", "")[:64],
                "birth_date": request.POST.get("birth_date", "")[:20]}
        try:
            codes.redeem(form["code"], parse_birth_date(form["birth_date"]), request)
        except CodeRefused as refused:
            refusal = refused.reason.value
        else:
            return redirect("patients:exams")
    account_login = f"{reverse('login')}?{urlencode({'next': reverse('patients:exams')})}"
    response = render(request, "patients/login.html", {
        "form": form, "refusal": refusal, "account_login": account_login,
        "window_minutes": throttle.window() // 60,
    }, status=STATUS.get(Refusal(refusal), 400) if refusal else 200)
    if refusal == Refusal.TOO_MANY:
        response["Retry-After"] = str(throttle.window())
    return response


def _studies(request: HttpRequest) -> QuerySet[Study]:
    """The signed-in patient's studies; only the code's patient for a code sign-in."""
    return policies.visible_studies(principals.of_request(request))


@login_required(login_url=LOGIN)
@require_GET
def exam_list(request: HttpRequest) -> HttpResponse:
    studies = list(_studies(request).select_related("patient__clinic")
                   .order_by("-study_date", "-pk")[:200])
    access.record_search(Actor.from_request(request), studies,
                         query={"page": "patient exams"})
    user = request.user
    assert isinstance(user, User)
    finals = reading.final_reports(studies)
    received = reading.received_reports(studies)
    for study in studies:
        # The portal's own final report, to read here; else a report object that a report
        # system sent (issued, but not shown here); a preliminary one is not mentioned.
        study.final_report = finals.get(study.pk)  # type: ignore[attr-defined]
        study.has_report = study.pk in received  # type: ignore[attr-defined]
    return render(request, "patients/exams.html", {
        "studies": studies,
        "second_factor_on": second_factor.confirmed_device(user) is not None,
    })


def _own_study(request: HttpRequest, study_uid: str) -> Study:
    """The study if it is one of the patient's; else 404, refused on the record."""
    study = access.get_or_404(principals.of_request(request), Actor.from_request(request),
                              AuditAction.VIEW, "study", study_uid)
    assert isinstance(study, Study)
    return study


@login_required(login_url=LOGIN)
@require_GET
def exam_detail(request: HttpRequest, study_uid: str) -> HttpResponse:
    study = _own_study(request, study_uid)
    series = images.slices(study)
    presets = [p.name for p in images.CT_PRESETS] if "CT" in study.modalities.split("\\") \
        else ["default"]
    report = reading.visible_report(principals.of_request(request), study)
    return render(request, "patients/exam.html", {
        "study": study, "series": series, "presets": presets,
        "report": report if report is not None and reading.for_everyone(report) else None,
        "viewer": {"series": series, "base": reverse("patients:exam_detail",
                                                     args=[study.study_instance_uid])},
    })


@login_required(login_url=LOGIN)
@require_GET
def frame_image(request: HttpRequest, study_uid: str, sop_uid: str, frame: int
                ) -> HttpResponse:
    """One frame as a JPEG, counted on the caller's viewing session of the study (one
    chained entry per session, not per frame); a frame that is not the patient's is
    refused on the record, like the page."""
    instance = (Instance.objects.select_related("series__study__patient").filter(
        sop_instance_uid=sop_uid, series__study__study_instance_uid=study_uid,
        series__study__in=_studies(request)).first())
    if instance is None:
        access.get_or_404(principals.of_request(request), Actor.from_request(request),
                          AuditAction.VIEW, "instance", sop_uid)
        raise Http404  # allowed, but not under this study (or outside the code session)
    try:
        image = images.render_frame(instance, frame, preset=request.GET.get("preset", ""),
                                    thumbnail=request.GET.get("size") == "thumb")
    except images.CannotRender:
        raise Http404 from None
    read_sessions.record_read(AuditAction.VIEW, Actor.from_request(request),
                              Target.instance(instance))
    response = HttpResponse(image, content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=300"
    return response


@login_required(login_url=LOGIN)
@require_GET
def exam_report(request: HttpRequest, study_uid: str) -> HttpResponse:
    """The exam's final report as a page (the latest version, saying if it was amended)."""
    report = reading.current_or_404(principals.of_request(request), Actor.from_request(request),
                                    AuditAction.VIEW, study_uid)
    return render(request, "patients/report.html", {"report": report, "study": report.study})


@login_required(login_url=LOGIN)
@require_GET
def exam_report_pdf(request: HttpRequest, study_uid: str) -> StreamingHttpResponse:
    """The final report's PDF, as the archive holds it in the report's DICOM object."""
    report = reading.current_or_404(principals.of_request(request), Actor.from_request(request),
                                    AuditAction.DOWNLOAD, study_uid)
    return pdf_response(report)
