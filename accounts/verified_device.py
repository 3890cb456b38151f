"""Who is signed in and whether with a second factor, in one query.

Replaces Django's ``AuthenticationMiddleware`` and django-otp's ``OTPMiddleware``, which
between them read the user and then the verified device (two queries every request). Here
the user row is read with an ``EXISTS`` on the device the session says verified it, so the
semantics are django-otp's, checked on every request: a device deleted, disabled
(unconfirmed) or moved to another account stops counting at once, and the session forgets
it. The session's password hash is checked as ``django.contrib.auth.get_user`` does.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.auth.models import AnonymousUser
from django.db.models import Exists, OuterRef
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare
from django.utils.functional import SimpleLazyObject
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from .models import User

TOTP_LABEL = "otp_totp.totpdevice"


def _is_verified(user: Any) -> bool:
    return user.otp_device is not None


def _totp_pk(persistent_id: Any) -> int | None:
    """The TOTP device a session names (``otp_totp.totpdevice/<pk>``); None for anything
    else (this portal enrols TOTP only; a session from django-otp's older format is simply
    asked for a code again)."""
    if not isinstance(persistent_id, str):
        return None
    model, _, pk = persistent_id.rpartition("/")
    if model.lower() != TOTP_LABEL or not pk.isdigit():
        return None
    return int(pk)


def _anonymous() -> AnonymousUser:
    user = AnonymousUser()
    user.otp_device = None  # type: ignore[attr-defined]
    user.is_verified = partial(_is_verified, user)  # type: ignore[attr-defined]
    return user


def verified_user(request: HttpRequest) -> User | AnonymousUser:
    """The session's user, with ``otp_device`` and ``is_verified()`` as django-otp sets
    them; an ``AnonymousUser`` when nobody is signed in (or the session no longer holds)."""
    session = request.session
    try:
        user_id = auth._get_user_session_key(request)  # type: ignore[attr-defined]
        backend_path = session[auth.BACKEND_SESSION_KEY]
    except KeyError:
        return _anonymous()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return _anonymous()
    backend = auth.load_backend(backend_path)
    device_pk = _totp_pk(session.get(DEVICE_ID_SESSION_KEY))
    users = User._default_manager.filter(pk=user_id)
    if device_pk is not None:
        users = users.annotate(second_factor_ok=Exists(TOTPDevice.objects.filter(
            pk=device_pk, user=OuterRef("pk"), confirmed=True)))
    user = users.first()
    if user is None or not getattr(backend, "user_can_authenticate", bool)(user):
        return _anonymous()
    if not _session_hash_holds(request, user):
        return _anonymous()
    user.backend = backend_path  # type: ignore[attr-defined]
    device: Any = None
    if device_pk is not None and getattr(user, "second_factor_ok", False):
        # The EXISTS confirmed it; the row itself is read only if something uses it.
        device = SimpleLazyObject(partial(TOTPDevice.objects.get, pk=device_pk))
    elif DEVICE_ID_SESSION_KEY in session:
        del session[DEVICE_ID_SESSION_KEY]
    user.otp_device = device  # type: ignore[attr-defined]
    user.is_verified = partial(_is_verified, user)  # type: ignore[attr-defined]
    return user


def _session_hash_holds(request: HttpRequest, user: User) -> bool:
    """``django.contrib.auth.get_user``'s check: a password change ends other sessions."""
    session = request.session
    session_hash = session.get(auth.HASH_SESSION_KEY)
    current = user.get_session_auth_hash()
    if session_hash and constant_time_compare(session_hash, current):
        return True
    if session_hash and any(constant_time_compare(session_hash, fallback)
                            for fallback in user.get_session_auth_fallback_hash()):
        session.cycle_key()
        session[auth.HASH_SESSION_KEY] = current
        return True
    session.flush()
    return False


class VerifiedUserMiddleware(AuthenticationMiddleware):
    """``request.user``, lazily, with its second factor (see the module docstring). A
    subclass of Django's, so everything that requires that middleware finds it."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)  # the session check, and request.auser
        user = SimpleLazyObject(partial(verified_user, request))
        request.user = user  # type: ignore[assignment]

        async def auser() -> Any:
            return await sync_to_async(lambda: user._setupfunc())()  # type: ignore[attr-defined]

        request.auser = auser
