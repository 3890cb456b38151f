"""The probe and metrics endpoints. They are served by :class:`ops.middleware.ProbeMiddleware`
ahead of every other middleware (no session, no login or second factor, no host or
HTTPS redirect, no CSRF: a load balancer probing a node's address over plain HTTP gets a
real answer), and they read no patient data, so they are not on the audit trail."""

from __future__ import annotations

import time

from django.http import HttpRequest, HttpResponse, JsonResponse

from portal.client_address import client_address

from . import health, metrics
from .metrics_access import Access, decide

_STARTED = time.monotonic()


def live(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok", "uptime_seconds": round(time.monotonic() - _STARTED)})


def ready(request: HttpRequest) -> HttpResponse:
    ok, checks = health.run(health.web_checks())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                        status=200 if ok else 503)


def metrics_view(request: HttpRequest) -> HttpResponse:
    access = decide(client_address(request), request.headers.get("Authorization", ""))
    if access is not Access.ALLOWED:
        return JsonResponse({"error": "not found"}, status=404)
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


ROUTES = {"/health/live": live, "/health/ready": ready, "/metrics": metrics_view}
