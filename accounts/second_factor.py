"""TOTP enrolment and verification (django-otp), as plain functions the view calls."""

from __future__ import annotations

import segno
from django.conf import settings
from django_otp.plugins.otp_totp.models import TOTPDevice

from .models import User


def confirmed_device(user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def required(user: object) -> bool:
    """Whether this account must give a TOTP code at sign-in.

    Staff and doctors always (:attr:`User.needs_second_factor`). A patient once they have
    turned it on, that is once they have a confirmed device; turning it on is voluntary,
    but from then on it protects every sign-in, an access-code sign-in included: the code
    and birth date replace the password, never the second factor.
    """
    if not isinstance(user, User) or not user.is_authenticated:
        return False
    return user.needs_second_factor or TOTPDevice.objects.filter(
        user=user, confirmed=True).exists()


def pending_device(user: User) -> TOTPDevice | None:
    """The unconfirmed device whose secret was last shown, awaiting its first code."""
    device: TOTPDevice | None = TOTPDevice.objects.filter(
        user=user, confirmed=False).order_by("-pk").first()
    return device


def new_pending_device(user: User) -> TOTPDevice:
    """A fresh unconfirmed device, replacing any earlier one.

    Each visit to the enrolment page shows a new secret and the old one stops counting, so
    a secret is shown exactly once: someone who later reaches the page (a shared computer,
    a session left open) never sees the key a phone was set up with.
    """
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    device: TOTPDevice = TOTPDevice.objects.create(user=user, name="TOTP", confirmed=False)
    return device


def secret(device: TOTPDevice) -> str:
    """The base32 key, for typing into an app by hand."""
    uri: str = device.config_url
    return uri.split("secret=")[1].split("&")[0]


def provisioning_uri(device: TOTPDevice) -> str:
    issuer = settings.OTP_TOTP_ISSUER.replace(":", "")
    uri: str = device.config_url
    return uri.replace("otpauth://totp/", f"otpauth://totp/{issuer}:", 1) + f"&issuer={issuer}"


def qr_svg(uri: str) -> str:
    """An inline SVG of the enrolment QR code (no image leaves the server)."""
    svg: str = segno.make(uri, error="m").svg_inline(scale=4)
    return svg


def verify(device: TOTPDevice, token: str) -> bool:
    token = "".join(token.split())
    if not token.isdigit():
        return False
    ok = bool(device.verify_token(token))
    if ok and not device.confirmed:
        device.confirmed = True
        device.save(update_fields=["confirmed"])
    return ok
