"""TOTP is required for staff and doctors, and for patients who turned it on: until verified,
they reach only the 2FA pages."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from . import second_factor

ALWAYS_OPEN = ("/static/", "/i18n/", "/accounts/enrol/", "/accounts/reset/",
               "/accounts/password-reset/")


class RequireSecondFactorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if (
            settings.REQUIRE_2FA
            and user.is_authenticated
            and not user.is_verified()  # type: ignore[attr-defined]
            and not self._open(request.path)
            and second_factor.required(user)  # last: a query for patients
        ):
            if request.path.startswith("/dicomweb/"):
                return JsonResponse(
                    {"error": "two-factor verification required; use an API token"}, status=403
                )
            return redirect(f"{reverse('two_factor')}?next={request.get_full_path()}")
        return self.get_response(request)

    @staticmethod
    def _open(path: str) -> bool:
        exempt = (reverse("two_factor"), reverse("logout"), reverse("login"))
        return path.startswith(ALWAYS_OPEN) or path in exempt
