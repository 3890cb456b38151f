"""OHIF's script, style, font and wasm files, answered before sessions, sign-in and the rest of
the middleware stack.

They are the public OHIF build (no patient data; see ``views``), so nothing after this
middleware has anything to decide for them. Going through the whole stack cost every file
the session row, the user and its second factor (three database round trips) and a few
milliseconds of Python; OHIF asks some thirty of them while it starts and while its first
QIDO-RS and metadata requests are in flight on the same workers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from csp.constants import HEADER
from csp.utils import build_policy
from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import Resolver404, get_script_prefix, get_urlconf, resolve, reverse
from django.utils.cache import patch_vary_headers

from . import ohif
from .views import OHIF_POLICY, dist, isolation_headers

FILE_VIEW = "viewer:file"


class OhifFilesMiddleware:
    """Sends a file of the OHIF build under ``/viewer/`` (the URL ``viewer:file`` resolves
    to one), compressed when the client accepts gzip; anything else (OHIF's pages, its
    configuration, a file the build does not have) goes on to the views."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        found = _file_for(request)
        if found is None:
            return self.get_response(request)
        response = isolation_headers(file_response(found))
        response[HEADER] = _files_policy()
        return response


def _file_for(request: HttpRequest) -> ohif.Prepared | None:
    if request.method not in ("GET", "HEAD"):
        return None
    prefix, local = _viewer_prefix(get_urlconf() or settings.ROOT_URLCONF, get_script_prefix())
    if not request.path_info.startswith(local):
        return None
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    relative = match.kwargs.get("path", "")
    if match.view_name != FILE_VIEW or relative in ("", "index.html"):
        return None
    found = ohif.prepare(dist(), relative, prefix, gzip_ok=accepts_gzip(request))
    if found is not None:
        request.resolver_match = match  # the request log and metrics name the view
    return found


@functools.lru_cache(maxsize=8)
def _viewer_prefix(urlconf: str, script_prefix: str) -> tuple[str, str]:
    """The viewer's prefix as its files name it (with the script prefix, for the paths
    they are rewritten to) and as ``path_info`` starts with it (without). Remembered:
    ``reverse`` costs 50 us, and every request of the portal comes through here."""
    prefix = reverse("viewer:index", urlconf=urlconf)
    return prefix, "/" + prefix.removeprefix(script_prefix)


@functools.cache
def _files_policy() -> str:
    """OHIF's policy without a nonce: a worker script's response carries the policy its
    worker runs under (the codecs' 'unsafe-eval' included)."""
    return build_policy(config=dict(OHIF_POLICY))


def accepts_gzip(request: HttpRequest) -> bool:
    accepted = request.headers.get("Accept-Encoding", "")
    for part in accepted.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def file_response(found: ohif.Prepared) -> HttpResponseBase:
    """The file, gzip-encoded when there is a gzip copy; cached for good when its name
    carries a content hash, revalidated otherwise."""
    response: HttpResponseBase
    if isinstance(found.gzipped, bytes):
        response = HttpResponse(found.gzipped, content_type=found.content_type)
    elif found.gzipped is not None:
        response = FileResponse(found.gzipped.open("rb"), content_type=found.content_type)
    elif found.data is not None:
        response = HttpResponse(found.data, content_type=found.content_type)
    else:
        response = FileResponse(found.path.open("rb"), content_type=found.content_type)
    if found.gzipped is not None:
        response["Content-Encoding"] = "gzip"
    if found.path.suffix.lower() in ohif.COMPRESSIBLE:
        patch_vary_headers(response, ["Accept-Encoding"])
    response["Cache-Control"] = ("public, max-age=31536000, immutable" if found.immutable
                                 else "no-cache")
    return response
