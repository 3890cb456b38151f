"""Ends a receipt-code session once its code stops: revoked or expired.

The policy already opens nothing for such a session (:func:`imaging.principals.of_request`
checks the code on every request); signing it out as well sends the browser back to the
code sign-in page instead of showing empty pages.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

from imaging import principals

from . import codes


class EndedCodeSessionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (user is not None and user.is_authenticated
                and codes.session_code(request) is not None
                and principals.of_request(request).kind == principals.Kind.ANONYMOUS):
            logout(request)
            principals.set_for_request(request, principals.Principal.anonymous())
        return self.get_response(request)
