"""Login security: argon2 hashes, lockout after repeated failures, TOTP for staff."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.hashers import identify_hasher
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import enrolment
from audit.trail import Actor

from .conftest import PASSWORD

pytestmark = [pytest.mark.two_factor, pytest.mark.argon2]


def _login(client: Client, username: str, password: str = PASSWORD):
    return client.post("/accounts/login/", {"username": username, "password": password})


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"


def test_passwords_are_stored_as_argon2_hashes(dora):
    assert identify_hasher(dora.password).algorithm == "argon2"


def test_five_wrong_passwords_lock_the_account_even_for_the_right_password(dora):
    client = Client()
    for _ in range(4):
        assert _login(client, "dora", "wrong password").status_code == 200
    assert _login(client, "dora", "wrong password").status_code == 429  # the fifth
    response = _login(client, "dora")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_doctor_must_enrol_and_enter_a_totp_code_before_seeing_anything(dora):
    client = Client()
    # Enrolment needs a one-time link from an admin (tests/test_second_factor_enrolment.py).
    assert client.post(enrolment.issue(dora, Actor.system("test"))).status_code == 302
    assert _login(client, "dora").status_code == 302
    response = client.get("/imaging/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/")

    page = client.get(response["Location"])
    assert b"<svg" in page.content  # enrolment QR code
    device = TOTPDevice.objects.get(user=dora, confirmed=False)

    wrong = client.post("/accounts/2fa/", {"token": "000000", "next": "/imaging/"})
    assert wrong.status_code == 200
    assert client.get("/imaging/").status_code == 302

    time.sleep(1.1)  # django-otp throttles the attempt right after a wrong code
    ok = client.post("/accounts/2fa/", {"token": _code(device), "next": "/imaging/"})
    assert ok.status_code == 302 and ok["Location"] == "/imaging/"
    assert client.get("/imaging/").status_code == 200
    device.refresh_from_db()
    assert device.confirmed


def test_a_second_sign_in_asks_for_a_code_again_without_reenrolment(dora):
    device = TOTPDevice.objects.create(user=dora, name="phone", confirmed=True)
    client = Client()
    _login(client, "dora")
    page = client.get("/accounts/2fa/")
    assert b"<svg" not in page.content
    assert client.post("/accounts/2fa/", {"token": _code(device)}).status_code == 302
    assert client.get("/imaging/").status_code == 200


def test_the_2fa_page_never_redirects_off_site(dora):
    device = TOTPDevice.objects.create(user=dora, name="phone", confirmed=True)
    client = Client()
    _login(client, "dora")
    response = client.post(
        "/accounts/2fa/", {"token": _code(device), "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_patients_sign_in_without_a_second_factor(paula):
    client = Client()
    _login(client, "paula")
    assert client.get("/patient/exams/").status_code == 200


def test_unverified_staff_sessions_get_403_from_dicomweb_not_a_login_page(tina):
    client = Client()
    _login(client, "tina")
    response = client.get("/dicomweb/studies")
    assert response.status_code == 403


def test_sessions_expire_and_cookies_are_http_only(settings):
    assert settings.SESSION_COOKIE_AGE <= 12 * 3600
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE
    assert settings.SESSION_COOKIE_HTTPONLY
