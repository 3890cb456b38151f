"""The doctors' workspace: a patient's timeline, a study's page and an instance's header.

Staff pages: patients (own account or receipt code) have their exam pages and get 404
here. Each page asks :mod:`imaging.access` once, which decides and writes the one audit
entry (a VIEW of the patient, study or instance); outsiders get 404, on the record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from audit.models import AuditAction
from audit.trail import Actor, Target
from portal.navigation import staff_page
from viewer import ohif

from . import access, dicom_header, policies, principals, timeline
from .models import Instance, Study
from .rejection_views import RejectForm, instances_by_series, may_reject

MAX_QUERY = 200


def _viewer_installed() -> bool:
    return ohif.installed(Path(settings.OHIF_DIST))


def _viewer_url(study_uid: str, prior_uid: str | None = None) -> str:
    return f"{reverse('viewer:study')}?{ohif.study_query(study_uid, prior_uid)}"


@login_required
@require_GET
@staff_page(refused=lambda kwargs: Target(level="patient"))
def patient_timeline(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principals.of_request(request)
    patient = access.patient_or_404(principal, Actor.from_request(request), AuditAction.VIEW,
                                    pk)
    found = timeline.build_timeline(principal, patient, request.GET.get("current", "")[:64])
    current = found.current.uid if found.current is not None else ""
    entries = [{"card": card, "viewer_url": _viewer_url(card.uid),
                "compare_url": _viewer_url(current, card.uid) if card.prior else ""}
               for card in found.studies]
    return render(request, "imaging/patient_timeline.html", {
        "patient": patient, "timeline": found, "entries": entries, "current_uid": current,
        "viewer_installed": _viewer_installed(),
    })


@login_required
@require_GET
@staff_page(refused=lambda kwargs: Target(level="study", uid=kwargs["uid"][:128]))
def study_detail(request: HttpRequest, uid: str) -> HttpResponse:
    principal = principals.of_request(request)
    found = access.get_or_404(principal, Actor.from_request(request), AuditAction.VIEW,
                              "study", uid)
    assert isinstance(found, Study)
    card = timeline.study_card(found)
    priors = timeline.priors_of(principal, found)
    may_download = bool(policies.decide(principal, policies.Action.SHARE, found.patient,
                                        outside=False))
    rejecting = may_reject(principal, found)  # the clinic's admins: the reject form
    images = instances_by_series(found) if rejecting else {}
    return render(request, "imaging/study_detail.html", {
        "card": card, "study": found, "patient": found.patient,
        "priors": [(prior, _viewer_url(found.study_instance_uid, prior.uid))
                   for prior in priors],
        "viewer_url": _viewer_url(found.study_instance_uid),
        "viewer_installed": _viewer_installed(),
        "may_download": may_download,
        "reject_form": RejectForm(found) if rejecting else None,
        "reject_rows": [(series, images.get(series.uid, [])) for series in card.series],
    })


@login_required
@require_GET
@staff_page(refused=lambda kwargs: Target(level="instance", uid=kwargs["sop"][:128],
                                          study_uid=kwargs["uid"][:128]))
def instance_header(request: HttpRequest, uid: str, sop: str) -> HttpResponse:
    principal = principals.of_request(request)
    found = access.get_or_404(principal, Actor.from_request(request), AuditAction.VIEW,
                              "instance", sop)
    assert isinstance(found, Instance)
    series = found.series
    if series.study.study_instance_uid != uid:
        raise Http404
    query = request.GET.get("q", "")[:MAX_QUERY]
    rows = dicom_header.header_rows(found.metadata)
    return render(request, "imaging/instance_header.html", {
        "instance": found, "series": series, "study": series.study,
        "rows": dicom_header.search(rows, query), "query": query,
        "total": dicom_header.count(rows), **_neighbours(found),
    })


def _neighbours(instance: Instance) -> dict[str, Any]:
    """The previous and next instance of its series, in the series' order."""
    uids = list(Instance.objects.filter(series=instance.series_id)
                .order_by("instance_number", "pk").values_list("sop_instance_uid", flat=True))
    at = uids.index(instance.sop_instance_uid)
    return {"position": at + 1, "of": len(uids),
            "previous_uid": uids[at - 1] if at > 0 else "",
            "next_uid": uids[at + 1] if at + 1 < len(uids) else ""}
