"""Route each DICOMweb resource and method to the module that implements it.

QIDO-RS searches live in ``qido``, STOW-RS in ``stow``, WADO-RS retrieval in ``wado``.
Authentication (Basic, bearer token, session) and the access policy are applied by those
modules through ``dicomweb.auth`` and ``imaging.access``; this file only dispatches.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseNotAllowed
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from . import qido, stow, wado


def _not_allowed(*methods: str) -> HttpResponseBase:
    return HttpResponseNotAllowed(methods)


@csrf_exempt  # stow.store enforces CSRF itself for session-authenticated browsers
def studies(request: HttpRequest) -> HttpResponseBase:
    if request.method in ("GET", "HEAD"):
        return qido.search(request, "study")
    if request.method == "POST":
        return stow.store(request, None)
    return _not_allowed("GET", "POST")


def all_series(request: HttpRequest) -> HttpResponseBase:
    return qido.search(request, "series")


def all_instances(request: HttpRequest) -> HttpResponseBase:
    return qido.search(request, "instance")


@csrf_exempt
def study(request: HttpRequest, study: str) -> HttpResponseBase:
    if request.method in ("GET", "HEAD"):
        return wado.retrieve(request, study)
    if request.method == "POST":
        return stow.store(request, study)
    return _not_allowed("GET", "POST")


def study_series(request: HttpRequest, study: str) -> HttpResponseBase:
    return qido.search(request, "series", study=study)


def study_instances(request: HttpRequest, study: str) -> HttpResponseBase:
    return qido.search(request, "instance", study=study)


def series_instances(request: HttpRequest, study: str, series: str) -> HttpResponseBase:
    return qido.search(request, "instance", study=study, series=series)


def series(request: HttpRequest, study: str, series: str) -> HttpResponseBase:
    return wado.retrieve(request, study, series)


def instance(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponseBase:
    return wado.retrieve(request, study, series, instance)


def study_metadata(request: HttpRequest, study: str) -> HttpResponseBase:
    return wado.metadata(request, study)


def series_metadata(request: HttpRequest, study: str, series: str) -> HttpResponseBase:
    return wado.metadata(request, study, series)


def instance_metadata(
    request: HttpRequest, study: str, series: str, instance: str
) -> HttpResponseBase:
    return wado.metadata(request, study, series, instance)


def study_rendered(request: HttpRequest, study: str) -> HttpResponseBase:
    return wado.rendered(request, study)


def series_rendered(request: HttpRequest, study: str, series: str) -> HttpResponseBase:
    return wado.rendered(request, study, series)


def instance_rendered(
    request: HttpRequest, study: str, series: str, instance: str
) -> HttpResponseBase:
    return wado.rendered(request, study, series, instance)


def frames_rendered(
    request: HttpRequest, study: str, series: str, instance: str, frames: str
) -> HttpResponseBase:
    return wado.rendered(request, study, series, instance, frames=frames)


def study_thumbnail(request: HttpRequest, study: str) -> HttpResponseBase:
    return wado.thumbnail(request, study)


def series_thumbnail(request: HttpRequest, study: str, series: str) -> HttpResponseBase:
    return wado.thumbnail(request, study, series)


def instance_thumbnail(
    request: HttpRequest, study: str, series: str, instance: str
) -> HttpResponseBase:
    return wado.thumbnail(request, study, series, instance)


def frames(
    request: HttpRequest, study: str, series: str, instance: str, frames: str
) -> HttpResponseBase:
    return wado.frames(request, study, series, instance, frames)


def bulkdata(
    request: HttpRequest, study: str, series: str, instance: str, tag_path: str
) -> HttpResponseBase:
    return wado.bulkdata(request, study, series, instance, tag_path)
