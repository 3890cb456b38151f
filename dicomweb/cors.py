"""CORS for DICOMweb, so a viewer served from another origin (OHIF) can call the archive.

Only paths under ``DICOMWEB_CORS_PATH`` (default ``/dicomweb/``) get CORS headers, and
only for origins listed in ``DICOMWEB_CORS_ORIGINS`` (``["*"]`` allows any origin, without
credentials). An empty list, the default, means no CORS at all: the same-origin setup
behind one reverse proxy needs none.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

ALLOW_METHODS = "GET, HEAD, POST, OPTIONS"
ALLOW_HEADERS = "Accept, Accept-Encoding, Authorization, Content-Type, Range, X-CSRFToken"
EXPOSE_HEADERS = "Content-Type, Content-Length, Content-Encoding, Content-Range, Location"
MAX_AGE = "600"


def allowed_origin(origin: str) -> str | None:
    """The value for Access-Control-Allow-Origin, or None when ``origin`` is not allowed."""
    origins: list[str] = list(getattr(settings, "DICOMWEB_CORS_ORIGINS", []) or [])
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin.rstrip("/") in {o.rstrip("/") for o in origins} else None


class CorsMiddleware:
    """Adds CORS headers to DICOMweb responses and answers preflight ``OPTIONS`` itself.

    Place it before ``CommonMiddleware`` and the authentication middleware: a preflight
    carries no credentials and must not be redirected or refused.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        prefix = settings.DICOMWEB_CORS_PATH
        if not request.path.startswith(prefix):
            return self.get_response(request)
        origin = allowed_origin(request.headers.get("Origin", ""))
        preflight = (request.method == "OPTIONS"
                     and "Access-Control-Request-Method" in request.headers)
        if preflight:
            response = HttpResponse(status=204)
            if origin:
                response["Access-Control-Allow-Methods"] = ALLOW_METHODS
                response["Access-Control-Allow-Headers"] = request.headers.get(
                    "Access-Control-Request-Headers", ALLOW_HEADERS)
                response["Access-Control-Max-Age"] = MAX_AGE
        else:
            response = self.get_response(request)
        if origin:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            if origin != "*":
                response["Access-Control-Allow-Credentials"] = "true"
        if getattr(settings, "DICOMWEB_CORS_ORIGINS", None):
            patch_vary_headers(response, ("Origin",))
        return response
