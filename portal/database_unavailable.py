"""The answer when the database cannot be reached: 503 with Retry-After, not a 500.

A restart or failover of PostgreSQL is an outage the client should wait out, and a load
balancer or a STOW-RS sender retries a 503 that says when; a 500 says the portal is broken.
Django turns an exception anywhere in a request (a middleware reading the session, a view,
DRF) into a call of ``handler500`` while the exception is still being handled, so this one
place covers every page and API: an ``OperationalError`` or ``InterfaceError`` (no
connection, connection lost, server shutting down) becomes the 503; anything else is
Django's own 500.
"""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.views import defaults

RETRY_AFTER_SECONDS = 5  # a restart of PostgreSQL takes a few seconds


def is_database_unavailable(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OperationalError | InterfaceError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def server_error(request: HttpRequest) -> HttpResponse:
    if not is_database_unavailable(sys.exc_info()[1]):
        return defaults.server_error(request)
    response = HttpResponse(
        _("The archive's database is unavailable for a moment. Try again in a few seconds."),
        status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
