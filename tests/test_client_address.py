"""Behind a reverse proxy every request comes from the proxy: the client's address is read
from X-Forwarded-For, but only when a trusted proxy sent it.

One function (portal.client_address) gives the address to the sign-in lockout (axes), the
access-code and link throttles and the audit trail. From a trusted proxy the forwarded
client counts; from anyone else a forged X-Forwarded-For changes nothing.
"""

from __future__ import annotations

import ipaddress

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from audit.models import AuditAction, AuditEvent
from patients import codes
from portal.client_address import client_address

from .conftest import archived_record
from .test_access_codes import sign_in

PROXY = "10.0.0.2"
CLIENT = "203.0.113.7"
OTHER_CLIENT = "198.51.100.4"


@pytest.fixture(autouse=True)
def behind_a_proxy(settings):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/24"),
                                ipaddress.ip_network("2001:db8::/64")]


def _address(remote: str, forwarded: str | None = None) -> str:
    request = RequestFactory().get("/", REMOTE_ADDR=remote)
    if forwarded is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_address(request)


def test_from_a_trusted_proxy_the_forwarded_client_is_the_address():
    assert _address(PROXY, CLIENT) == CLIENT


def test_the_list_is_read_from_the_right_skipping_trusted_proxies():
    assert _address(PROXY, f"{CLIENT}, 10.0.0.9") == CLIENT
    assert _address(PROXY, f"{CLIENT}, 2001:db8::5") == CLIENT


def test_entries_the_client_wrote_left_of_its_own_address_are_ignored():
    assert _address(PROXY, f"1.2.3.4, {CLIENT}") == CLIENT


def test_from_an_untrusted_address_a_forged_header_is_ignored():
    assert _address(CLIENT, "1.2.3.4") == CLIENT


def test_with_no_trusted_proxies_the_header_is_never_read(settings):
    settings.TRUSTED_PROXIES = []
    assert _address(PROXY, CLIENT) == PROXY


def test_an_unreadable_header_from_a_proxy_leaves_the_proxy_as_the_address():
    assert _address(PROXY, "") == PROXY
    assert _address(PROXY, "not-an-address") == PROXY


def _login(client: Client, username: str, HTTP_X_FORWARDED_FOR: str):
    return client.post("/accounts/login/", {"username": username, "password": "wrong"},
                       HTTP_X_FORWARDED_FOR=HTTP_X_FORWARDED_FOR)


def test_the_sign_in_lockout_counts_the_forwarded_client_not_the_proxy(db):
    proxy = Client(REMOTE_ADDR=PROXY)
    for n in range(4):
        assert _login(proxy, f"guess{n}", HTTP_X_FORWARDED_FOR=CLIENT).status_code == 200
    assert _login(proxy, "guess5", HTTP_X_FORWARDED_FOR=CLIENT).status_code == 429
    # Another client behind the same proxy is not locked out with the first.
    assert _login(proxy, "someone", HTTP_X_FORWARDED_FOR=OTHER_CLIENT).status_code == 200


def test_a_forged_header_does_not_escape_the_sign_in_lockout(db):
    direct = Client(REMOTE_ADDR=CLIENT)
    for n in range(4):
        assert _login(direct, f"guess{n}", HTTP_X_FORWARDED_FOR=f"1.2.3.{n}").status_code == 200
    assert _login(direct, "guess5", HTTP_X_FORWARDED_FOR="1.2.3.99").status_code == 429


@pytest.fixture
def paulas_record(db, ct_study):
    return archived_record(ct_study, "PAULA-001")


def test_the_code_throttle_counts_the_forwarded_client(client, settings, tina, paulas_record):
    settings.PATIENT_CODE_ADDRESS_LIMIT = 2
    _access, code = codes.issue_code(paulas_record, tina)
    via_proxy = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": CLIENT}
    for guess in ("AAAA", "BBBB"):
        assert sign_in(client, f"{guess}-2345-6789-ABCD-EFGH", **via_proxy).status_code == 400
    assert sign_in(client, code, **via_proxy).status_code == 429
    other = sign_in(client, code, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=OTHER_CLIENT)
    assert other.status_code == 302


def test_a_forged_header_does_not_escape_the_code_throttle(client, settings, tina,
                                                           paulas_record):
    settings.PATIENT_CODE_ADDRESS_LIMIT = 2
    _access, code = codes.issue_code(paulas_record, tina)
    for n, guess in enumerate(("AAAA", "BBBB")):
        response = sign_in(client, f"{guess}-2345-6789-ABCD-EFGH", REMOTE_ADDR=CLIENT,
                           HTTP_X_FORWARDED_FOR=f"1.2.3.{n}")
        assert response.status_code == 400
    assert sign_in(client, code, REMOTE_ADDR=CLIENT,
                   HTTP_X_FORWARDED_FOR="1.2.3.99").status_code == 429


def test_the_audit_names_the_forwarded_client_and_ignores_a_forged_header(client, tina,
                                                                          paulas_record):
    _access, _code = codes.issue_code(paulas_record, tina)
    sign_in(client, "AAAA-2345-6789-ABCD-EFGH", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=CLIENT)
    sign_in(client, "BBBB-2345-6789-ABCD-EFGH", REMOTE_ADDR=OTHER_CLIENT,
            HTTP_X_FORWARDED_FOR="1.2.3.4")
    addresses = list(AuditEvent.objects.filter(action=AuditAction.LOGIN).order_by("seq")
                     .values_list("ip", flat=True))
    assert addresses[-2:] == [CLIENT, OTHER_CLIENT]


def test_the_link_throttle_counts_the_forwarded_client(client, settings, db):
    settings.SHARING_FAILURE_LIMIT = 2
    via_proxy = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": CLIENT}
    for n in range(2):
        url = reverse("sharing:public_link", args=[f"guess{n}"])
        assert client.get(url, **via_proxy).status_code == 404
    assert client.get(reverse("sharing:public_link", args=["again"]),
                      **via_proxy).status_code == 429
    other = client.get(reverse("sharing:public_link", args=["again"]), REMOTE_ADDR=PROXY,
                       HTTP_X_FORWARDED_FOR=OTHER_CLIENT)
    assert other.status_code == 404
