"""Every authentication event is one entry on the trail: sign-ins, failed sign-ins, failed
second factors, refused DICOMweb credentials, API tokens issued and revoked, and a
break-the-glass for a patient ID the archive does not have."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

from accounts.models import ApiToken
from audit.models import AuditAction, AuditEvent, Outcome
from patients import codes

from .conftest import PASSWORD, archived_record

STUDIES = "/dicomweb/studies"


def _logins() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditAction.LOGIN).order_by("seq"))


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_a_password_sign_in_is_exactly_one_entry(client, dora):
    response = client.post("/accounts/login/", {"username": "dora", "password": PASSWORD},
                           REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 302
    (entry,) = _logins()
    assert (entry.username, entry.user_pk, entry.outcome) == ("dora", dora.pk, "allowed")
    assert (entry.ip, entry.detail["method"]) == ("10.1.2.3", "password")


def test_a_failed_sign_in_records_the_name_typed_and_never_the_password(client, dora):
    assert client.post("/accounts/login/", {"username": "dora", "password": "guess"}
                       ).status_code == 200
    (entry,) = _logins()
    assert (entry.outcome, entry.username, entry.detail["username"]) == ("failed", "", "dora")
    assert "guess" not in str(entry.detail) + entry.reason


def test_an_access_code_sign_in_is_exactly_one_entry(client, tina, ct_study):
    _access, code = codes.issue_code(archived_record(ct_study, "PAULA-001"), tina)
    response = client.post("/patient/", {"code": code, "birth_date": "1975-04-12"})
    assert response.status_code == 302
    (entry,) = _logins()
    assert entry.outcome == "allowed" and entry.detail["method"] == "access_code"


def test_force_login_in_tests_is_not_a_sign_in(client, dora):
    client.force_login(dora)
    assert _logins() == []


def test_a_wrong_second_factor_code_is_recorded(client, dora):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.create(user=dora, name="phone", confirmed=True)  # enrolled before
    client.force_login(dora)
    assert client.post("/accounts/2fa/", {"token": "000000"}).status_code == 200
    (entry,) = _logins()
    assert (entry.username, entry.outcome, entry.detail["method"]) == ("dora", "failed",
                                                                      "totp")


def test_a_wrong_dicomweb_basic_password_is_one_entry(client, dora):
    response = client.get(STUDIES, HTTP_AUTHORIZATION=_basic("dora", "guess"))
    assert response.status_code == 401
    (entry,) = _logins()
    assert (entry.outcome, entry.detail) == ("failed", {"method": "basic", "username": "dora"})


def test_malformed_basic_credentials_and_unknown_schemes_are_recorded(client, db):
    assert client.get(STUDIES, HTTP_AUTHORIZATION="Basic !!!").status_code == 401
    assert client.get(STUDIES, HTTP_AUTHORIZATION="Digest x").status_code == 401
    assert [(e.outcome, e.reason) for e in _logins()] == [
        ("failed", "malformed Basic credentials"), ("failed", "unsupported authorization scheme")]


def test_a_second_factor_account_using_a_bare_password_on_dicomweb_is_denied_on_record(
        client, dora, settings):
    settings.REQUIRE_2FA = True
    response = client.get(STUDIES, HTTP_AUTHORIZATION=_basic("dora", PASSWORD))
    assert response.status_code == 401
    (entry,) = _logins()
    assert (entry.outcome, entry.detail["username"]) == ("denied", "dora")


def test_a_wrong_or_revoked_bearer_token_is_recorded(client, dora):
    token, secret = ApiToken.issue(dora, "viewer")
    token.revoke()
    assert client.get(STUDIES, HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401
    assert client.get(STUDIES, HTTP_AUTHORIZATION="Bearer not-a-token").status_code == 401
    revoked, unknown = _logins()
    assert (revoked.outcome, revoked.detail["method"], revoked.detail["token"]) == (
        "failed", "bearer", token.pk)
    assert unknown.detail["token"] is None and unknown.detail["prefix"] == "not-a-to"


def test_issuing_and_revoking_a_token_are_recorded(client, dora):
    client.force_login(dora)
    assert client.post("/accounts/tokens/", {"name": "OHIF laptop"}).status_code == 200
    token = ApiToken.objects.get()
    assert client.post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 302
    issued, revoked = AuditEvent.objects.filter(action=AuditAction.TOKEN).order_by("seq")
    assert (issued.username, issued.detail["step"], issued.detail["name"]) == (
        "dora", "issued", "OHIF laptop")
    assert (revoked.detail["step"], revoked.detail["token"]) == ("revoked", token.pk)
    assert token.prefix in str(issued.detail) and "secret" not in str(issued.detail)


def test_an_admin_revoking_tokens_is_recorded(client, alice, dora):
    token, _secret = ApiToken.issue(dora, "viewer")
    client.force_login(alice)
    client.post("/admin/accounts/apitoken/", {"action": "revoke",
                                              "_selected_action": [token.pk]})
    (entry,) = AuditEvent.objects.filter(action=AuditAction.TOKEN)
    assert (entry.username, entry.detail["owner"], entry.detail["step"]) == (
        "alice", "dora", "revoked")


def test_breaking_the_glass_for_an_unknown_patient_id_is_recorded(client, dora):
    client.force_login(dora)
    response = client.post("/imaging/emergency/", {
        "patient_id": "NOBODY-9", "reason": "unconscious patient in the emergency room"})
    assert response.status_code == 200
    (entry,) = AuditEvent.objects.filter(action=AuditAction.BREAK_GLASS)
    assert (entry.username, entry.outcome, entry.object_uid) == ("dora", Outcome.FAILED,
                                                                 "NOBODY-9")


@pytest.mark.two_factor
def test_a_locked_out_account_is_recorded_as_locked_out(dora):
    client = Client()
    for _ in range(6):
        client.post("/accounts/login/", {"username": "dora", "password": "guess"})
    assert _logins()[-1].reason == "account locked out"
