"""The second factor a session was verified with is checked on every request, in the same
query that reads the user: a device deleted, disabled or given to another account stops
counting at once, and no stale verification survives in the session."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from .conftest import PASSWORD

pytestmark = pytest.mark.two_factor


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"


@pytest.fixture
def verified(dora) -> tuple[Client, TOTPDevice]:
    """Dora signed in with her password and a code from her phone, as on the login page."""
    device = TOTPDevice.objects.create(user=dora, name="phone", confirmed=True)
    client = Client()
    client.post("/accounts/login/", {"username": "dora", "password": PASSWORD})
    response = client.post("/accounts/2fa/", {"token": _code(device), "next": "/"})
    assert response.status_code == 302, response.content[:300]
    assert client.get("/dicomweb/studies").status_code == 200
    return client, device


def test_a_verified_session_reads_user_and_device_in_one_query(verified):
    client, _ = verified
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/dicomweb/studies").status_code == 200
    user_sql = [q["sql"] for q in queries if '"accounts_user"' in q["sql"].split("WHERE")[0]
                or "otp_totp" in q["sql"]]
    assert len(user_sql) == 1 and "otp_totp_totpdevice" in user_sql[0]


def test_a_deleted_device_stops_counting_at_the_next_request(verified):
    client, device = verified
    device.delete()
    assert client.get("/dicomweb/studies").status_code == 403
    assert DEVICE_ID_SESSION_KEY not in client.session


def test_a_disabled_device_stops_counting_at_the_next_request(verified):
    client, device = verified
    TOTPDevice.objects.filter(pk=device.pk).update(confirmed=False)  # no signal sent
    assert client.get("/dicomweb/studies").status_code == 403
    assert DEVICE_ID_SESSION_KEY not in client.session


def test_a_device_moved_to_another_account_stops_counting(verified, alice):
    client, device = verified
    TOTPDevice.objects.filter(pk=device.pk).update(user=alice)
    assert client.get("/dicomweb/studies").status_code == 403


def test_a_session_naming_a_device_it_was_not_verified_with_is_not_verified(dora, alice):
    alices = TOTPDevice.objects.create(user=alice, name="phone", confirmed=True)
    client = Client()
    client.force_login(dora)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = alices.persistent_id
    session.save()
    assert client.get("/dicomweb/studies").status_code == 403


def test_a_password_change_ends_a_verified_session(verified, dora):
    client, _ = verified
    dora.set_password("another-long-password-42")
    dora.save()
    assert client.get("/dicomweb/studies").status_code == 401


def test_a_deactivated_account_is_signed_out(verified, dora):
    client, _ = verified
    dora.is_active = False
    dora.save()
    assert client.get("/dicomweb/studies").status_code == 401


def test_the_verified_device_is_the_real_row_when_something_asks_for_it(verified, rf, dora):
    from accounts.verified_device import verified_user

    client, device = verified
    request = rf.get("/")
    request.session = client.session
    user: Any = verified_user(request)
    assert user.is_verified()
    assert user.otp_device.pk == device.pk and user.otp_device.name == "phone"


def test_nobody_signed_in_is_anonymous_and_unverified(rf, client, db):
    from accounts.verified_device import verified_user

    request = rf.get("/")
    request.session = client.session
    user: Any = verified_user(request)
    assert not user.is_authenticated and not user.is_verified()
