"""The OHIF viewer for signed-in portal users, same origin as DICOMweb.

Same origin means the portal session authenticates OHIF's DICOMweb requests (no token in
the browser, no CORS), and the access policy and audit of ``dicomweb`` apply as to any
client. OHIF's pages and its configuration need a signed-in user; its script, style and
wasm files are the public OHIF build and are served to anyone, so workers and wasm loads
never meet a login redirect.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, cast

from csp.constants import NONCE, NONE, SELF
from csp.decorators import csp
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils import translation
from django.views.decorators.http import require_safe

from . import ohif

P = ParamSpec("P")

# OHIF's own Content-Security-Policy, looser than the portal's (settings) only where OHIF
# needs it, as tests/test_content_security_policy.py found in Chromium: its two inline
# scripts in index.html carry this response's nonce; its image codecs (JPEG 2000, JPEG-LS)
# are Emscripten WebAssembly whose bindings compile JavaScript from strings, hence
# 'unsafe-eval' (not only 'wasm-unsafe-eval'); its UI sets inline styles and data: images.
# Still same origin only: no script, worker, frame or connection goes anywhere else.
OHIF_POLICY: dict[str, list[Any]] = {
    "default-src": [SELF],
    "script-src": [SELF, NONCE, "'unsafe-eval'"],
    "worker-src": [SELF],
    "style-src": [SELF, "'unsafe-inline'"],
    "img-src": [SELF, "data:", "blob:"],
    "font-src": [SELF],
    "connect-src": [SELF],
    "media-src": [SELF],
    "manifest-src": [SELF],
    "object-src": [NONE],
    "base-uri": [SELF],
    "form-action": [SELF],
    "frame-ancestors": [NONE],
}



def _ohif_policy(view: Callable[P, HttpResponseBase]) -> Callable[P, HttpResponseBase]:
    """django-csp's ``csp`` decorator, typed for views that take URL arguments."""
    return cast(Callable[P, HttpResponseBase], csp(OHIF_POLICY)(view))  # type: ignore[arg-type]


# Paths with one of these endings are files: missing ones are 404, not the SPA page.
_FILE_SUFFIXES = set(ohif.CONTENT_TYPES)


def dist() -> Path:
    return Path(settings.OHIF_DIST)


def _isolated() -> bool:
    return bool(getattr(settings, "OHIF_CROSS_ORIGIN_ISOLATED", False))


def isolation_headers(response: HttpResponseBase) -> HttpResponseBase:
    """COOP/COEP so OHIF may use SharedArrayBuffer (volume viewports, MPR), when enabled."""
    if _isolated():
        response["Cross-Origin-Opener-Policy"] = "same-origin"
        response["Cross-Origin-Embedder-Policy"] = "require-corp"
        response["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


def _not_installed(request: HttpRequest) -> HttpResponse:
    """503 in the user's language: the viewer is missing, not the page. Admins read how to
    install it; nobody reads where the server looked for it."""
    response = render(request, "viewer/not_installed.html", status=503)
    response["Cache-Control"] = "no-store"
    return response


@require_safe
@_ohif_policy
def page(request: HttpRequest, path: str) -> HttpResponseBase:
    """OHIF's one page for every route it handles (study list, viewer); a 404 for a file the
    build does not have."""
    prefix = reverse("viewer:index")
    # The build's files are sent by files.OhifFilesMiddleware before this view is reached.
    if path and path != "index.html" and Path(path).suffix.lower() in _FILE_SUFFIXES:
        raise Http404("no such file in the OHIF build")
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    try:
        html = ohif.index_html(dist(), prefix)
    except ohif.NotInstalled:
        return _not_installed(request)
    nonce = str(request.csp_nonce)  # type: ignore[attr-defined]  # csp.middleware
    html = html.replace(b"<script>", f'<script nonce="{nonce}">'.encode())
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    response["Cache-Control"] = "no-cache, private"
    # OHIF's language detector reads this cookie before its own saved choice, so OHIF
    # follows the portal's language; scoped to the viewer, where it wins over a cookie
    # OHIF saves at "/".
    response.set_cookie(ohif.LANGUAGE_COOKIE, ohif.ohif_language(translation.get_language()),
                        path=prefix, samesite="Lax", secure=request.is_secure())
    return isolation_headers(response)


@require_safe
@_ohif_policy
@login_required
def app_config(request: HttpRequest) -> HttpResponseBase:
    """``window.config`` pointing OHIF at this server's DICOMweb, from the request's host."""
    if not ohif.installed(dist()):
        return _not_installed(request)
    studies = request.build_absolute_uri(reverse("dicomweb:studies"))
    root = studies.removesuffix("/studies")
    script = ohif.app_config(
        dicomweb_root=root,
        router_basename=reverse("viewer:index").rstrip("/") or "/",
        shared_array_buffer=_isolated(),
    )
    response = HttpResponse(script, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "no-cache, private"
    return isolation_headers(response)
