"""Two-step verification for patients: optional, turned on from the exams page, and from
then on asked at every sign-in, an access-code sign-in included (the code and birth date
stand in for the password, never for the second factor)."""

from __future__ import annotations

import base64

import pytest
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from imaging.models import Patient
from patients import codes

from .conftest import PASSWORD, ingest_paths

pytestmark = pytest.mark.two_factor

EXAMS = "/patient/exams/"


def _login(client: Client, username: str = "paula", password: str = PASSWORD):
    return client.post("/accounts/login/", {"username": username, "password": password,
                                            "next": EXAMS})


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"


def test_a_patient_without_a_device_is_never_asked_for_a_code(paula):
    client = Client()
    _login(client)
    page = client.get(EXAMS)
    assert page.status_code == 200
    assert f'href="/accounts/2fa/?next={EXAMS}"' in page.content.decode()  # the offer


def test_paula_turns_on_two_step_verification_from_her_exams_page(paula):
    client = Client()
    _login(client)
    enrol = client.get(f"/accounts/2fa/?next={EXAMS}")
    assert enrol.status_code == 200 and b"<svg" in enrol.content
    assert enrol.context["voluntary"]
    device = TOTPDevice.objects.get(user=paula, confirmed=False)

    done = client.post("/accounts/2fa/", {"token": _code(device), "next": EXAMS})
    assert done.status_code == 302 and done["Location"] == EXAMS
    device.refresh_from_db()
    assert device.confirmed
    page = client.get(EXAMS).content.decode()
    assert 'id="two-step-on"' in page and 'id="two-step"' not in page


def test_once_on_every_sign_in_asks_for_the_code(paula):
    device = TOTPDevice.objects.create(user=paula, name="phone", confirmed=True)
    client = Client()
    assert _login(client).status_code == 302
    held = client.get(EXAMS)
    assert held.status_code == 302 and held["Location"].startswith("/accounts/2fa/")
    page = client.get(held["Location"])
    assert b"<svg" not in page.content  # no re-enrolment

    ok = client.post("/accounts/2fa/", {"token": _code(device), "next": EXAMS})
    assert ok["Location"] == EXAMS
    assert client.get(EXAMS).status_code == 200


def test_an_enrolment_left_half_way_asks_for_nothing(paula):
    TOTPDevice.objects.create(user=paula, name="TOTP", confirmed=False)
    client = Client()
    _login(client)
    assert client.get(EXAMS).status_code == 200


def test_a_wrong_code_keeps_paula_out(paula):
    TOTPDevice.objects.create(user=paula, name="phone", confirmed=True)
    client = Client()
    _login(client)
    assert client.post("/accounts/2fa/", {"token": "000000", "next": EXAMS}).status_code == 200
    assert client.get(EXAMS).status_code == 302


def test_doctors_are_still_always_asked(dora):
    client = Client()
    _login(client, "dora")
    assert client.get("/imaging/")["Location"].startswith("/accounts/2fa/")


def test_dicomweb_basic_auth_is_refused_once_a_patient_has_a_device(paula):
    auth = base64.b64encode(f"paula:{PASSWORD}".encode()).decode()
    assert Client().get("/dicomweb/studies",
                        HTTP_AUTHORIZATION=f"Basic {auth}").status_code == 200
    TOTPDevice.objects.create(user=paula, name="phone", confirmed=True)
    assert Client().get("/dicomweb/studies",
                        HTTP_AUTHORIZATION=f"Basic {auth}").status_code == 401


# --- Access-code sign-ins --------------------------------------------------------------------


@pytest.fixture
def code_record(db, ct_study) -> Patient:
    """paula's record with no portal account yet, as after an exam at the clinic."""
    ingest_paths(ct_study[1])
    return Patient.objects.get(patient_id="PAULA-001")


def _redeem(client: Client, code: str):
    return client.post("/patient/", {"code": code, "birth_date": "1975-04-12"})


def test_a_code_sign_in_asks_nothing_more_when_the_account_has_no_device(tina, code_record):
    _, code = codes.issue_code(code_record, tina)
    client = Client()
    assert _redeem(client, code).status_code == 302
    assert client.get(EXAMS).status_code == 200


def test_a_code_sign_in_still_asks_for_the_totp_code_once_it_is_on(tina, code_record):
    _, code = codes.issue_code(code_record, tina)
    client = Client()
    _redeem(client, code)
    code_record.refresh_from_db()
    account = code_record.user
    assert isinstance(account, User)
    device = TOTPDevice.objects.create(user=account, name="phone", confirmed=True)
    client.logout()

    client = Client()
    assert _redeem(client, code).status_code == 302
    held = client.get(EXAMS)
    assert held.status_code == 302 and held["Location"].startswith("/accounts/2fa/")
    assert client.post("/accounts/2fa/", {"token": _code(device), "next": EXAMS}
                       )["Location"] == EXAMS
    assert client.get(EXAMS).status_code == 200
