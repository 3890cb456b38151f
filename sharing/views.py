"""Pages for download links and shares. Thin: they parse, call :mod:`sharing.services`,
and turn refusals into pages a patient understands (never a trace).

- ``/sharing/``: the signed-in user's links and shares, and the studies they may share.
- ``/s/<token>``: the public page of a download link (PIN form when it has one) and
  ``/s/<token>/download``: the ZIP, resumable with Range requests.
- ``/v/<token>``: what an outside professional sees: the study's series as images.

Refusals: unknown 404, expired/revoked/used up 410, wrong PIN 403, too many failures from
one address 429. Studies the user may not share are 404, as if they did not exist.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any, Literal

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit import read_sessions
from audit.models import AuditAction
from audit.trail import Actor, Target
from dicomweb import rendering
from dicomweb.resume import parse_range
from imaging import blobs, policies, principals
from imaging.models import Instance, Series, Study
from portal.client_address import client_address
from privacy.consent import ConsentRequired

from . import archive, services, throttle
from .models import DownloadLink, Share
from .services import LinkRefused, Refusal
from .zipstream import Archive

STATUS = {
    Refusal.UNKNOWN: 404, Refusal.EXPIRED: 410, Refusal.REVOKED: 410, Refusal.USED_UP: 410,
    Refusal.WRONG_PIN: 403, Refusal.PIN_REQUIRED: 403, Refusal.WITHDRAWN: 410,
}
IMAGES_PER_SERIES = 24
VIEWPORT = (512, 512)


def _ip(request: HttpRequest) -> str:
    return client_address(request)


def _refused(request: HttpRequest, reason: Refusal | str, status: int | None = None,
             *, share: bool = False) -> HttpResponse:
    if reason in (Refusal.UNKNOWN, Refusal.WRONG_PIN):
        throttle.failed(_ip(request))
    code = status or STATUS.get(Refusal(reason), 404)
    return render(request, "sharing/refused.html", {"reason": str(reason), "share": share},
                  status=code)


def _too_many(request: HttpRequest) -> HttpResponse:
    response = render(request, "sharing/refused.html", {"reason": "too_many"}, status=429)
    response["Retry-After"] = str(throttle.window())
    return response


# --- The signed-in side: make, list and revoke ----------------------------------------------


def _studies(request: HttpRequest, uids: list[str]) -> list[Study]:
    """The studies with these UIDs that the user sees, or 404 if any is not one of them."""
    uids = sorted(set(u.strip() for u in uids if u.strip()))
    studies = list(policies.visible_studies(principals.of_request(request))
                   .filter(study_instance_uid__in=uids).order_by("-study_date", "pk"))
    if not uids or len(studies) != len(uids):
        raise Http404
    return studies


def _int(value: Any, default: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        return default


def _basis_form(request: HttpRequest, data: Any) -> dict[str, Any]:
    """The legal-basis fields, offered to staff when the patient has no sharing consent."""
    staff = policies.may_share_on_legal_basis(principals.of_request(request))
    return {"legal_basis": str(data.get("legal_basis", "")),
            "basis_reason": str(data.get("basis_reason", ""))[:2000],
            "legal_bases": list(policies.LEGAL_BASES.items()) if staff else []}


def _public_url(request: HttpRequest, name: str) -> services.LinkUrl:
    return lambda token: request.build_absolute_uri(reverse(name, args=[token]))


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    user = request.user
    return render(request, "sharing/overview.html", {
        "studies": policies.visible_studies(principals.of_request(request))
        .order_by("-study_date", "pk")[:200],
        "links": DownloadLink.objects.filter(created_by=user.pk)
        .prefetch_related("studies")[:100],
        "shares": Share.objects.filter(created_by=user.pk).select_related("study")[:100],
        "now": timezone.now(),
    })


@login_required
@require_http_methods(["GET", "POST"])
def link_new(request: HttpRequest) -> HttpResponse:
    data = request.POST if request.method == "POST" else request.GET
    studies = _studies(request, data.getlist("study"))
    form = {"days": data.get("days", "7"), "max_uses": data.get("max_uses", "5"),
            "email": data.get("email", ""), **_basis_form(request, data)}
    error = ""
    consent_missing = False
    if request.method == "POST":
        try:
            link, token = services.create_download_link(
                principals.of_request(request), studies, actor=Actor.from_request(request),
                expires_in=datetime.timedelta(days=_int(form["days"], 0)),
                pin=data.get("pin", ""), max_uses=_int(form["max_uses"], 0),
                recipient_email=form["email"].strip(),
                link_url=_public_url(request, "sharing:public_link"),
                legal_basis=form["legal_basis"], basis_reason=form["basis_reason"],
            )
        except ConsentRequired:
            consent_missing = True
        except services.NotAllowed:
            raise Http404 from None
        except services.InvalidRequest as exc:
            error = str(exc)
        else:
            url = request.build_absolute_uri(reverse("sharing:public_link", args=[token]))
            return render(request, "sharing/link_created.html",
                          {"link": link, "url": url, "studies": studies})
    return render(request, "sharing/link_form.html",
                  {"studies": studies, "form": form, "error": error,
                   "consent_missing": consent_missing},
                  status=403 if consent_missing else 400 if error else 200)


@login_required
@require_http_methods(["GET", "POST"])
def share_new(request: HttpRequest) -> HttpResponse:
    data = request.POST if request.method == "POST" else request.GET
    study = _studies(request, data.getlist("study")[:1])[0]
    form: dict[str, Any] = {
        "days": data.get("days", "7"), "email": data.get("email", ""),
        "name": data.get("name", ""), "message": data.get("message", ""),
        "allow_download": bool(data.get("allow_download")), **_basis_form(request, data),
    }
    error = ""
    consent_missing = False
    if request.method == "POST":
        try:
            share, _token = services.share_with_professional(
                principals.of_request(request), study, str(form["email"]),
                actor=Actor.from_request(request),
                link_url=_public_url(request, "sharing:share_view"),
                recipient_name=str(form["name"]), message=str(form["message"]),
                expires_in=datetime.timedelta(days=_int(form["days"], 0)),
                allow_download=bool(form["allow_download"]),
                legal_basis=str(form["legal_basis"]), basis_reason=str(form["basis_reason"]),
            )
        except ConsentRequired:
            consent_missing = True
        except services.NotAllowed:
            raise Http404 from None
        except services.InvalidRequest as exc:
            error = str(exc)
        else:
            messages.success(request, _("The link was sent to %(email)s.")
                             % {"email": share.recipient_email})
            return redirect("sharing:overview")
    status = 403 if consent_missing else 400 if error else 200
    return render(request, "sharing/share_form.html",
                  {"study": study, "form": form, "error": error,
                   "consent_missing": consent_missing}, status=status)


@login_required
@require_POST
def link_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    link = get_object_or_404(DownloadLink, pk=pk)
    try:
        services.revoke_link(principals.of_request(request), link, Actor.from_request(request))
    except services.NotAllowed:
        raise Http404 from None
    messages.success(request, _("The link was revoked; it no longer works."))
    return redirect("sharing:overview")


@login_required
@require_POST
def share_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    share = get_object_or_404(Share.objects.select_related("study__patient"), pk=pk)
    try:
        services.revoke_share(principals.of_request(request), share, Actor.from_request(request))
    except services.NotAllowed:
        raise Http404 from None
    messages.success(request, _("The share was revoked; it no longer works."))
    return redirect("sharing:overview")


# --- The public side: download links --------------------------------------------------------


def _pin_key(link: DownloadLink) -> str:
    return f"sharing:pin:{link.pk}"


def _resume_key(link: DownloadLink) -> str:
    return f"sharing:resume:{link.pk}"


@never_cache
@require_http_methods(["GET", "POST"])
def public_link(request: HttpRequest, token: str) -> HttpResponse:
    if throttle.blocked(_ip(request)):
        return _too_many(request)
    actor = Actor.from_request(request)
    pin_error = False
    try:
        if request.method == "POST":
            link = services.resolve_link(token, actor, pin=request.POST.get("pin", ""))
            request.session[_pin_key(link)] = True
            return redirect("sharing:public_link", token=token)
        pin_ok = _pin_verified(request, token)
        link = services.resolve_link(token, actor, pin_verified=pin_ok)
    except LinkRefused as refused:
        if refused.reason not in (Refusal.PIN_REQUIRED, Refusal.WRONG_PIN):
            return _refused(request, refused.reason)
        pin_error = refused.reason == Refusal.WRONG_PIN
        if pin_error:
            throttle.failed(_ip(request))
        return render(request, "sharing/pin.html", {"pin_error": pin_error},
                      status=403 if pin_error else 200)
    studies = list(link.studies.select_related("patient").order_by("study_date", "pk"))
    return render(request, "sharing/public_link.html", {
        "link": link, "studies": studies, "remaining": link.max_uses - link.uses,
        "size": sum(s.size_bytes for s in studies), "token": token,
    })


def _resume_ticket(request: HttpRequest, link: DownloadLink | None) -> dict[str, Any] | None:
    """The session's right to resume a counted download: until when, and how many more
    bytes (one copy of the ZIP per counted use; past that a range is a new use)."""
    ticket = request.session.get(_resume_key(link)) if link else None
    if not isinstance(ticket, dict):
        return None
    try:
        until = datetime.datetime.fromisoformat(str(ticket["until"]))
        budget = int(ticket["budget"])
    except (KeyError, TypeError, ValueError):
        return None
    if until <= timezone.now() or budget <= 0:
        return None
    return {"until": ticket["until"], "budget": budget}


def _pin_verified(request: HttpRequest, token: str) -> bool:
    link = services.find_link(token)
    return bool(link and request.session.get(_pin_key(link)))


def _zip_response(plan: archive.Plan, zipped: Archive, span: tuple[int, int] | None,
                  filename: str) -> StreamingHttpResponse:
    start, end = span if span else (0, zipped.size)
    body: Iterator[bytes] = zipped.iter_range(start, end)
    response = StreamingHttpResponse(body, content_type="application/zip",
                                     status=206 if span else 200)
    response["Content-Length"] = str(end - start)
    if span:
        response["Content-Range"] = f"bytes {start}-{end - 1}/{zipped.size}"
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = plan.etag
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _unsatisfiable(size: int) -> HttpResponse:
    response = HttpResponse(status=416)
    response["Content-Range"] = f"bytes */{size}"
    return response


def _span(request: HttpRequest, plan: archive.Plan, size: int
          ) -> tuple[int, int] | Literal[False] | None:
    """The range asked for (``dicomweb.resume.parse_range``: False when unsatisfiable)."""
    if_range = request.headers.get("If-Range")
    if if_range and if_range != plan.etag:
        return None  # the archive changed since the client's first part: send it all
    return parse_range(request.headers.get("Range", ""), size)


@never_cache
@require_GET
def public_download(request: HttpRequest, token: str) -> HttpResponseBase:
    if throttle.blocked(_ip(request)):
        return _too_many(request)
    actor = Actor.from_request(request)
    link = services.find_link(token)
    ticket = _resume_ticket(request, link)
    resuming = bool(ticket and request.headers.get("Range"))
    try:
        link = services.resolve_link(token, actor, pin_verified=_pin_verified(request, token),
                                     audit_pin_required=True, resuming=resuming)
    except LinkRefused as refused:
        if refused.reason == Refusal.PIN_REQUIRED:
            return redirect("sharing:public_link", token=token)
        return _refused(request, refused.reason)
    plan = services.link_plan(link)
    zipped = archive.archive(plan)
    span = _span(request, plan, zipped.size)
    if span is False:
        return _unsatisfiable(zipped.size)
    detail = {"bytes": f"{span[0]}-{span[1] - 1}"} if span else {}
    if ticket and span and span[0] > 0 and span[1] - span[0] <= ticket["budget"]:
        services.record_resume(link, actor, detail)
        request.session[_resume_key(link)] = {**ticket,
                                              "budget": ticket["budget"] - (span[1] - span[0])}
    else:
        try:
            services.count_use(link, actor, detail=detail)
        except LinkRefused as refused:
            return _refused(request, refused.reason)
        until = timezone.now() + services.RESUME_WINDOW
        request.session[_resume_key(link)] = {"until": until.isoformat(),
                                              "budget": zipped.size}
    day = timezone.localdate(link.created).strftime("%Y%m%d")
    return _zip_response(plan, zipped, span, f"exam-images-{day}.zip")


# --- The public side: shares with professionals ---------------------------------------------


def _share_or_refusal(request: HttpRequest, token: str, action: AuditAction
                      ) -> Share | HttpResponse:
    if throttle.blocked(_ip(request)):
        return _too_many(request)
    try:
        return services.resolve_share(token, Actor.from_request(request), action)
    except LinkRefused as refused:
        return _refused(request, refused.reason, share=True)


@never_cache
@require_GET
def share_view(request: HttpRequest, token: str) -> HttpResponse:
    share = _share_or_refusal(request, token, AuditAction.VIEW)
    if isinstance(share, HttpResponse):
        return share
    services.record_share_use(share, Actor.from_request(request), AuditAction.VIEW)
    series = []
    for one in Series.objects.filter(study=share.study).order_by("series_number", "pk"):
        images = list(one.instances.exclude(rows=None).order_by("instance_number", "pk")
                      .values_list("sop_instance_uid", flat=True)[:IMAGES_PER_SERIES])
        series.append({"series": one, "images": images})
    response = render(request, "sharing/share_view.html",
                      {"share": share, "study": share.study, "series": series, "token": token})
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_GET
def share_image(request: HttpRequest, token: str, sop_uid: str) -> HttpResponse:
    """One instance's first frame as a JPEG, counted on the share's viewing session of the
    study (one chained entry per session); a refused link is its own entry."""
    share = _share_or_refusal(request, token, AuditAction.VIEW)
    if isinstance(share, HttpResponse):
        return share
    instance = get_object_or_404(Instance.objects.select_related("series__study__patient"),
                                 sop_instance_uid=sop_uid, series__study=share.study)
    try:
        with blobs.open_blob(instance.blob_key) as fp:
            image = rendering.render_preview(fp, 0, window=None, viewport=VIEWPORT,
                                             quality=85)
    except Exception:  # no pixel data or no codec: the page shows the alt text
        raise Http404 from None
    read_sessions.record_read(
        AuditAction.VIEW, services.share_actor(share, Actor.from_request(request)),
        Target.instance(instance), caller=f"share:{share.pk}",
        detail={"step": "share", "share": share.pk})
    response = HttpResponse(image, content_type=rendering.JPEG)
    response["Cache-Control"] = "private, max-age=300"
    return response


@never_cache
@require_GET
def share_download(request: HttpRequest, token: str) -> HttpResponseBase:
    share = _share_or_refusal(request, token, AuditAction.DOWNLOAD)
    if isinstance(share, HttpResponse):
        return share
    plan = services.share_plan(share)
    zipped = archive.archive(plan)
    span = _span(request, plan, zipped.size)
    if span is False:
        return _unsatisfiable(zipped.size)
    services.record_share_use(share, Actor.from_request(request), AuditAction.DOWNLOAD,
                              {"bytes": f"{span[0]}-{span[1] - 1}"} if span else {})
    return _zip_response(plan, zipped, span, "exam-images.zip")
