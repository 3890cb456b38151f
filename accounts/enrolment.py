"""Who may enrol a second factor: one-time links an admin issues, or a password reset.

A password alone must never be enough to enrol a phone: otherwise whoever first signs in
with a leaked or default staff password enrols their own device, and the account is theirs.
An account without a confirmed TOTP device may enrol one only in a session that either
opened an enrolment link an admin issued for it, or set the account's password through a
reset link sent to its e-mail. Patients turn two-step verification on by choice and are not
held to this (:func:`may_enrol`).

A link is a signed token (no table): it names the account and a fingerprint of its state
(password hash, last sign-in, TOTP devices). Opening it replaces the account's pending
device, which changes the fingerprint, so the link works once; so does a sign-in, a new
password or a confirmed device. It expires after ``ENROLMENT_LINK_HOURS``.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.core import signing
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuditAction
from audit.trail import Actor, Target, record

from . import second_factor
from .models import User

SALT = "accounts.enrolment"
SESSION_KEY = "accounts_enrolment_allowed"


def lifetime() -> datetime.timedelta:
    return datetime.timedelta(hours=settings.ENROLMENT_LINK_HOURS)


def _fingerprint(user: User) -> str:
    devices = ",".join(str(pk) for pk in TOTPDevice.objects.filter(user=user)
                       .order_by("pk").values_list("pk", flat=True))
    last_login = user.last_login.isoformat() if user.last_login else ""
    state = f"{user.pk}|{user.password}|{last_login}|{devices}"
    return salted_hmac(SALT, state, algorithm="sha256").hexdigest()


def issue(user: User, issued_by: Actor) -> str:
    """The path of a one-time enrolment link for ``user``; audited, never stored."""
    token = signing.dumps({"user": user.pk, "state": _fingerprint(user)}, salt=SALT)
    expires = timezone.now() + lifetime()
    record(AuditAction.LOGIN, issued_by, Target("user", user.get_username()),
           detail={"step": "issue_enrolment", "user": user.pk,
                   "expires": expires.isoformat()})
    return reverse("enrol", args=[token])


def demo_link(user: User, base_url: str, command: str) -> str:
    """For the demo commands: a link to print beside a fresh password, when ``user`` has
    to enrol a second factor and has none ("" otherwise)."""
    if not user.needs_second_factor or TOTPDevice.objects.filter(
            user=user, confirmed=True).exists():
        return ""
    return base_url.rstrip("/") + issue(user, Actor.system(command))


def account(token: str) -> User | None:
    """The account a valid, unused, unexpired link names (the link is not spent); else None."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=lifetime())
    except signing.BadSignature:  # expired links are a subclass
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("user"), int):
        return None
    user = User.objects.filter(pk=int(payload["user"]), is_active=True).first()
    if user is None or not constant_time_compare(str(payload.get("state")), _fingerprint(user)):
        return None
    if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        return None
    return user


def redeem(token: str) -> User | None:
    """Like :func:`account`, spending the link."""
    user = account(token)
    if user is not None:
        second_factor.new_pending_device(user)  # changes the fingerprint: the link is spent
    return user


def allow(request: HttpRequest, user: User) -> None:
    """This session may enrol ``user``'s second factor (a link or a password reset)."""
    request.session[SESSION_KEY] = user.pk


def may_enrol(request: HttpRequest, user: User) -> bool:
    if not user.needs_second_factor:
        return True  # a patient turning it on by choice
    return bool(request.session.get(SESSION_KEY) == user.pk)

