"""A page of the portal's own origin (OHIF's "Create report") may STOW with the session and
no CSRF token: the browser's Fetch Metadata (``Sec-Fetch-Site: same-origin``) and ``Origin``
vouch for it. Any other session request that changes data still needs the token."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from tests.conftest import CHARLIE

BOUNDARY = "same-origin-7f3a"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
OWN_ORIGIN = "http://testserver"


@pytest.fixture
def browser_of(tina) -> Client:
    """tina's signed-in browser, as strict about CSRF as production."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(tina)
    return client


@pytest.fixture
def body(other_study: tuple[str, list[Path]]) -> bytes:
    _, paths = other_study
    return (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + paths[0].read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode())


def store(client: Client, body: bytes, **headers: str):
    return client.post("/dicomweb/studies", data=body, content_type=CONTENT_TYPE,
                       headers={"Accept": "application/dicom+json", **headers})


def test_a_same_origin_page_stores_with_the_session_and_no_token(browser_of, body, clinic):
    from imaging.models import Study

    response = store(browser_of, body, sec_fetch_site="same-origin", origin=OWN_ORIGIN)
    assert response.status_code == 200, response.content
    assert Study.objects.filter(patient__patient_id=CHARLIE.patient_id).exists()


@pytest.mark.parametrize("headers", [
    {},
    {"sec_fetch_site": "cross-site", "origin": "https://evil.example"},
    {"sec_fetch_site": "same-site", "origin": "http://other.testserver"},
    {"sec_fetch_site": "same-origin"},
    {"sec_fetch_site": "same-origin", "origin": "https://evil.example"},
    {"origin": OWN_ORIGIN},
], ids=["no fetch metadata", "cross-site", "same-site", "no origin", "foreign origin",
        "origin without fetch metadata"])
def test_any_other_session_store_without_a_token_is_refused(browser_of, body, clinic,
                                                            headers):
    from imaging.models import Study

    response = store(browser_of, body, **headers)
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]
    assert not Study.objects.filter(patient__patient_id=CHARLIE.patient_id).exists()
