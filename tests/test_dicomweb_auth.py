"""DICOMweb is never anonymous: HTTP Basic, a bearer token issued in the portal, or the
portal session (with CSRF on unsafe methods). Tokens are stored hashed, shown once, and
revocable by their owner and by admins."""

from __future__ import annotations

import base64
import datetime
import os

import pytest
import requests
from django.utils import timezone

from accounts.models import ApiToken
from tests.conftest import PASSWORD

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = pytest.mark.django_db(transaction=True)


def studies(live_server, **kwargs) -> requests.Response:
    return requests.get(f"{live_server.url}/dicomweb/studies", timeout=30, **kwargs)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_anonymous_callers_get_401_with_a_challenge(live_server, db):
    response = studies(live_server)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert "Basic" in challenge and "Bearer" in challenge
    post = requests.post(f"{live_server.url}/dicomweb/studies", data=b"x", timeout=30)
    assert post.status_code == 401


def test_basic_authentication_with_the_right_password_works(live_server, alice):
    assert studies(live_server, auth=("alice", PASSWORD)).status_code == 200
    assert studies(live_server, auth=("alice", "wrong password")).status_code == 401
    assert studies(live_server, auth=("nobody", PASSWORD)).status_code == 401


def test_malformed_or_unknown_authorization_is_401(live_server, alice):
    assert studies(live_server, headers={"Authorization": "Basic !!!"}).status_code == 401
    assert studies(live_server, headers={"Authorization": "Digest x"}).status_code == 401


def test_repeated_wrong_passwords_lock_the_account_out(live_server, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        studies(live_server, auth=("alice", "wrong password"))
    assert studies(live_server, auth=("alice", PASSWORD)).status_code != 200


def test_a_bearer_token_works_and_records_its_use(live_server, paula):
    token, secret = ApiToken.issue(paula, "viewer")
    assert token.token_hash != secret and secret not in token.token_hash
    assert token.prefix == secret[:8]
    assert studies(live_server, headers=bearer(secret)).status_code == 200
    token.refresh_from_db()
    assert token.last_used is not None


def test_revoked_expired_and_unknown_tokens_are_401(live_server, paula):
    revoked, revoked_secret = ApiToken.issue(paula, "old laptop")
    revoked.revoke()
    _expired, expired_secret = ApiToken.issue(
        paula, "temporary", timezone.now() - datetime.timedelta(minutes=1))
    for secret in (revoked_secret, expired_secret, "not-a-token"):
        response = studies(live_server, headers=bearer(secret))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_deactivated_users_token_stops_working(live_server, paula):
    _token, secret = ApiToken.issue(paula, "viewer")
    paula.is_active = False
    paula.save()
    assert studies(live_server, headers=bearer(secret)).status_code == 401


def test_accounts_with_a_second_factor_use_tokens_not_bare_passwords(live_server, dora,
                                                                    settings):
    settings.REQUIRE_2FA = True
    response = studies(live_server, auth=("dora", PASSWORD))
    assert response.status_code == 401
    assert "API token" in response.json()["error"]
    _token, secret = ApiToken.issue(dora, "workstation")
    assert studies(live_server, headers=bearer(secret)).status_code == 200


def _session_cookie(client, user) -> dict[str, str]:
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


def test_the_portal_session_works_for_searches(live_server, client, paula):
    response = studies(live_server, cookies=_session_cookie(client, paula))
    assert response.status_code == 200


def test_a_session_store_without_a_csrf_token_is_refused(live_server, client, tina):
    cookies = _session_cookie(client, tina)
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    url = f"{live_server.url}/dicomweb/studies"
    refused = requests.post(url, data=b"", cookies=cookies, headers=headers, timeout=30)
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]

    csrf = "a" * 32
    accepted = requests.post(
        url, data=b"", cookies={**cookies, "csrftoken": csrf},
        headers={**headers, "X-CSRFToken": csrf}, timeout=30,
    )
    assert accepted.status_code == 400  # past authentication: the body is empty


def test_tokens_are_created_shown_once_listed_and_revoked_in_the_portal(client, paula,
                                                                       charlie):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.create(user=paula, name="phone", confirmed=True)  # patients need one
    client.force_login(paula)
    created = client.post("/accounts/tokens/", {"name": "home viewer"})
    assert created.status_code == 200
    secret = created.context["secret"]
    assert secret and secret.encode() in created.content
    token = ApiToken.objects.get(user=paula)
    assert token.token_hash == ApiToken.hash(secret)

    listing = client.get("/accounts/tokens/")
    assert b"home viewer" in listing.content
    assert secret.encode() not in listing.content  # shown once only

    client.force_login(charlie)
    assert client.post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 404
    client.force_login(paula)
    client.post(f"/accounts/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked is not None


def test_admins_revoke_tokens_from_the_admin(client, alice, paula):
    token, _secret = ApiToken.issue(paula, "viewer")
    client.force_login(alice)
    response = client.post("/admin/accounts/apitoken/", {
        "action": "revoke", "_selected_action": [token.pk],
    })
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked is not None


def test_basic_credentials_are_checked_even_with_a_session(live_server, client, paula):
    wrong = base64.b64encode(b"paula:wrong password").decode()
    response = studies(live_server, cookies=_session_cookie(client, paula),
                       headers={"Authorization": f"Basic {wrong}"})
    assert response.status_code == 401
