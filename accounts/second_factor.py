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


def pending_device(user: User) -> TOTPDevice:
    """The unconfirmed device being enrolled (created once, reused until confirmed)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="TOTP", confirmed=False)
    return device


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
