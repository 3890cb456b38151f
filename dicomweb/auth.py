"""Who is calling DICOMweb: HTTP Basic, a bearer token (``accounts.ApiToken``) or the
portal session. Never anonymous.

Passwords are checked through ``django.contrib.auth.authenticate`` with the request, so the
axes lockout counts DICOMweb failures like login-page failures. Accounts that must use a
second factor (staff, doctors) may not use a bare password here when 2FA is enforced: they
use a token issued from a verified session. Session callers get Django's CSRF check on
unsafe methods (STOW from the browser), as DRF's SessionAuthentication does, unless the
browser itself vouches that the request comes from this origin (:func:`same_origin_browser`):
OHIF stores its reports (DICOM SR) by STOW and cannot send a CSRF token.
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate as django_authenticate
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from accounts import second_factor
from accounts.models import ApiToken
from audit import auth_events
from audit.models import Outcome
from imaging import principals

from .renderers import problem

REALM = "DICOMweb"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
# last_used is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class _CSRFCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def _unauthorized(message: str, *, error: str = "") -> HttpResponse:
    challenge = f'Basic realm="{REALM}", charset="UTF-8", Bearer realm="{REALM}"'
    if error:
        challenge += f', error="{error}"'
    return problem(HTTPStatus.UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge})


def authenticate(request: HttpRequest) -> HttpResponse | None:
    """Set ``request.user`` from the request's credentials.

    Returns None when the caller is known, else the response to send (401, or 403 for a
    failed CSRF check). Explicit credentials win over a session cookie.
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if scheme == "basic":
        return _basic(request, credentials)
    if scheme == "bearer":
        return _bearer(request, credentials)
    if header:
        auth_events.dicomweb_refused(request, "unsupported authorization scheme",
                                     method=scheme[:32])
        return _unauthorized("unsupported authorization scheme; use Basic or Bearer")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active:
        return _unauthorized("authentication required")
    if request.method not in SAFE_METHODS and not same_origin_browser(request):
        check = _CSRFCheck(lambda _request: HttpResponse())
        check.process_request(request)
        reason = check.process_view(request, None, (), {})  # type: ignore[arg-type]
        if reason:
            return problem(HTTPStatus.FORBIDDEN, f"CSRF check failed: {reason}")
    return None


def same_origin_browser(request: HttpRequest) -> bool:
    """Whether a browser says the request was made by a page of this very origin.

    ``Sec-Fetch-Site`` and ``Origin`` are headers no page script may set (Fetch Metadata,
    the defence OWASP lists beside tokens, and Go's ``CrossOriginProtection``): a forged
    cross-site request carries ``cross-site`` or ``same-site`` and its own origin. OHIF's
    STOW (its "Create report") sends no CSRF token, since its DICOMweb client only forwards
    an ``Authorization`` header. Both headers must agree with this server's origin; a
    client that sends neither (any non-browser) still needs the token.
    """
    if request.headers.get("Sec-Fetch-Site", "").lower() != "same-origin":
        return False
    origin = request.headers.get("Origin", "")
    try:
        own = f"{request.scheme}://{request.get_host()}"
    except DisallowedHost:
        return False
    return bool(origin) and origin.lower() == own.lower()


def _basic(request: HttpRequest, credentials: str) -> HttpResponse | None:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        auth_events.dicomweb_refused(request, "malformed Basic credentials", method="basic")
        return _unauthorized("malformed Basic credentials")
    username, sep, password = decoded.partition(":")
    if not sep:
        auth_events.dicomweb_refused(request, "malformed Basic credentials", method="basic")
        return _unauthorized("malformed Basic credentials")
    # A wrong password is recorded by authenticate() itself (user_login_failed).
    user = django_authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        return _unauthorized("wrong username or password")
    if getattr(settings, "REQUIRE_2FA", True) and second_factor.required(user):
        auth_events.dicomweb_refused(
            request, "a second-factor account tried a bare password", method="basic",
            outcome=Outcome.DENIED, username=user.get_username())
        return _unauthorized(
            "this account signs in with a second factor; use an API token (Bearer)"
        )
    request.user = user
    principals.set_for_request(request, principals.Principal.for_user(user))
    return None


def _bearer(request: HttpRequest, secret: str) -> HttpResponse | None:
    if not secret:
        auth_events.dicomweb_refused(request, "empty bearer token", method="bearer")
        return _unauthorized("empty bearer token", error="invalid_token")
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=ApiToken.hash(secret))
        .first()
    )
    if token is None or not token.active or not token.user.is_active:
        auth_events.dicomweb_refused(
            request, "invalid, expired or revoked token", method="bearer",
            prefix=secret[:ApiToken.PREFIX_LENGTH], token=token.pk if token else None)
        return _unauthorized("invalid, expired or revoked token", error="invalid_token")
    now = timezone.now()
    if token.last_used is None or now - token.last_used > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used=now)
    request.user = token.user
    principals.set_for_request(request, principals.Principal.for_token(token.user, token.pk))
    return None
