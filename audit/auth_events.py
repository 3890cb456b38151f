"""Authentication events on the trail: sign-ins, failed sign-ins and second factors, failed
DICOMweb credentials (``dicomweb.auth``), API tokens issued and revoked (``accounts``).

Sign-ins come from Django's auth signals, so every way of checking a password (the login
page, DICOMweb Basic, anything later) is covered, and django-axes lockouts too: its backend
refuses inside ``authenticate()``, which then sends ``user_login_failed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .models import AuditAction, Outcome
from .trail import Actor, record

if TYPE_CHECKING:
    from django.http import HttpRequest


def _actor(request: HttpRequest | None) -> Actor:
    return Actor.from_request(request) if request is not None else Actor()


def signed_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """``user_logged_in``: a sign-in whose credentials ``authenticate()`` checked.

    ``authenticate()`` marks the user it returns with ``user.backend``. The receipt access
    code (``patients.codes.redeem``) logs its user in without it, having checked the code
    itself, and records its own LOGIN entry with the code's details: skipped here, so each
    sign-in is one entry. The test client's ``force_login`` logs in on a bare request that
    no client sent (no method): not a sign-in either.
    """
    if request is None or request.method is None or not getattr(user, "backend", None):
        return
    # login() has just set request.user to the user signing in.
    record(AuditAction.LOGIN, Actor.from_request(request), None, Outcome.ALLOWED,
           detail={"method": _method(request)})


def sign_in_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None,
                   **kwargs: Any) -> None:
    """``user_login_failed``: a wrong username or password, or a locked-out account.

    The name typed goes in ``detail`` (Django has already masked the password); the actor
    stays anonymous, since no one was authenticated.
    """
    locked = bool(getattr(request, "axes_locked_out", False))
    record(AuditAction.LOGIN, _actor(request), None, Outcome.FAILED,
           reason="account locked out" if locked else "wrong username or password",
           detail={"method": _method(request),
                   "username": str(credentials.get("username") or "")[:150]})


def second_factor_failed(request: HttpRequest) -> None:
    """A wrong TOTP code (accounts.two_factor)."""
    record(AuditAction.LOGIN, _actor(request), None, Outcome.FAILED,
           reason="wrong second-factor code", detail={"method": "totp"})


def dicomweb_refused(request: HttpRequest, reason: str, *, method: str,
                     outcome: Outcome = Outcome.FAILED, **detail: Any) -> None:
    """DICOMweb credentials that were not accepted (those ``authenticate()`` did not already
    report through ``user_login_failed``)."""
    record(AuditAction.LOGIN, _actor(request), None, outcome, reason=reason,
           detail={"method": method, **detail})


def token_changed(actor: Actor, token: Any, step: str, *, reason: str = "") -> None:
    """An API token issued or revoked: ``step`` is "issued" or "revoked"."""
    record(AuditAction.TOKEN, actor, None, Outcome.ALLOWED, reason=reason, detail={
        "step": step, "token": token.pk, "name": token.name, "prefix": token.prefix,
        "owner": token.user.get_username(),
        "expires": token.expires.isoformat() if token.expires else None,
    })


def _method(request: HttpRequest | None) -> str:
    if request is None:
        return "password"
    scheme = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")[0].lower()
    return "basic" if scheme == "basic" else "password"
