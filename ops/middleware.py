"""Middleware for operators: probes answered first, and one log line and metric sample per
request with its request id."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from . import metrics, request_id
from .views import ROUTES

log = logging.getLogger("ops.requests")

Handler = Callable[[HttpRequest], HttpResponse]


class ProbeMiddleware:
    """``/health/live``, ``/health/ready`` and ``/metrics`` (with or without a trailing
    slash), answered before any other middleware can redirect, refuse the host or ask for
    a login. GET and HEAD only."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = ROUTES.get(request.path_info.rstrip("/") or "/")
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response: HttpResponse = JsonResponse({"error": "method not allowed"}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        response = view(request)
        response["Cache-Control"] = "no-store"
        return response


class RequestLogMiddleware:
    """Binds the request id (the caller's ``X-Request-ID`` when sane, else a new one),
    returns it in the response, counts the request by view and status, and with
    ``LOG_FORMAT=json`` writes one line for it. The path is logged without its query
    string: query values (QIDO-RS matching, search boxes) may hold patient names or IDs."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id.sane(request.META.get(request_id.META_KEY)) or request_id.new()
        token = request_id.bind(rid)
        started = time.perf_counter()
        status = 500
        try:
            response = self.get_response(request)
            status = response.status_code
            response[request_id.HEADER] = rid
            return response
        finally:
            seconds = time.perf_counter() - started
            view = _view_name(request)
            metrics.REQUESTS.labels(view, _method(request.method), str(status)).inc()
            metrics.REQUEST_SECONDS.labels(view).observe(seconds)
            if settings.LOG_FORMAT == "json":
                log.info("%s %s %s", request.method, request.path, status, extra={"fields": {
                    "event": "request", "method": request.method, "path": request.path,
                    "view": view, "status": status, "duration_ms": round(seconds * 1000, 1),
                    "user_id": _user_id(request)}})
            request_id.unbind(token)


def _view_name(request: HttpRequest) -> str:
    """The URL pattern's name (or the view's dotted path); "unmatched" for a 404 without one:
    never the path itself, which holds UIDs."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return str(match.view_name or match._func_path)[:100]


def _method(method: str | None) -> str:
    known = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    return method if method in known else "other"


def _user_id(request: HttpRequest) -> int | None:
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return int(pk) if pk is not None else None
