"""The patient's privacy pages: their own consents and exports only; charlie gets 404 for
anything of paula's."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import Consent, Purpose
from imaging.models import Patient
from privacy import consent
from privacy import export as exports
from privacy.models import DataExport


@pytest.fixture
def paulas_record(paula) -> Patient:
    return Patient.objects.create(patient_id="PAULA-001", name="Pereira^Paula", user=paula)


@pytest.fixture
def charlies_record(charlie) -> Patient:
    return Patient.objects.create(patient_id="CHARLIE-002", name="Costa^Charlie", user=charlie)


@pytest.fixture
def paulas_consent(paulas_record, paula) -> Consent:
    return consent.give(paulas_record, Purpose.SHARING, consent.CURRENT_TEXT_VERSION,
                        Consent.Channel.PORTAL, paula)


@pytest.fixture
def paulas_export(paulas_record, paula, django_capture_on_commit_callbacks) -> DataExport:
    with django_capture_on_commit_callbacks(execute=True):
        export = exports.request_export(paulas_record, paula)
    export.refresh_from_db()
    return export


def test_the_pages_need_a_signed_in_user(client, paulas_export):
    for url in ("/privacy/", f"/privacy/exports/{paulas_export.pk}/"):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_patient_sees_each_purpose_with_the_text_and_her_consent(
    client, paula, paulas_consent
):
    client.force_login(paula)
    page = client.get("/privacy/").content.decode()
    assert f'action="/privacy/consents/{paulas_consent.pk}/revoke/"' in page
    assert page.count('action="/privacy/consents/give/"') == 2  # research, automated
    assert consent.CURRENT_TEXT_VERSION in page


def test_the_patient_gives_consent_from_the_portal(client, paula, paulas_record):
    client.force_login(paula)
    response = client.post("/privacy/consents/give/",
                           {"patient": paulas_record.pk, "purpose": "research"})
    assert response.status_code == 302
    given = Consent.objects.get()
    assert (given.purpose, given.channel, given.recorded_by) == ("research", "portal", paula)
    assert given.text_version == consent.CURRENT_TEXT_VERSION
    client.post("/privacy/consents/give/", {"patient": paulas_record.pk, "purpose": "research"})
    assert Consent.objects.count() == 1  # agreeing twice to the same text records it once


def test_the_patient_revokes_consent_from_the_portal(client, paula, paulas_consent,
                                                     paulas_record):
    client.force_login(paula)
    assert client.post(f"/privacy/consents/{paulas_consent.pk}/revoke/").status_code == 302
    paulas_consent.refresh_from_db()
    assert paulas_consent.revoked is not None
    assert not consent.has_consent(paulas_record, Purpose.SHARING)


def test_charlie_sees_none_of_paulas_consents_or_exports(
    client, charlie, charlies_record, paulas_consent, paulas_export
):
    client.force_login(charlie)
    page = client.get("/privacy/").content.decode()
    assert f"/privacy/consents/{paulas_consent.pk}/" not in page
    assert f"/privacy/exports/{paulas_export.pk}/" not in page
    assert "PAULA-001" not in page and "Pereira" not in page


def test_charlie_cannot_revoke_paulas_consent(client, charlie, charlies_record, paulas_consent):
    client.force_login(charlie)
    assert client.post(f"/privacy/consents/{paulas_consent.pk}/revoke/").status_code == 404
    paulas_consent.refresh_from_db()
    assert paulas_consent.revoked is None


def test_charlie_cannot_consent_or_request_an_export_for_paula(
    client, charlie, charlies_record, paulas_record
):
    client.force_login(charlie)
    data = {"patient": paulas_record.pk, "purpose": "research"}
    assert client.post("/privacy/consents/give/", data).status_code == 404
    assert client.post("/privacy/exports/", {"patient": paulas_record.pk}).status_code == 404
    assert client.post("/privacy/exports/", {"patient": "not-a-number"}).status_code == 404
    assert not Consent.objects.exists() and not DataExport.objects.exists()


def test_charlie_cannot_see_paulas_export_or_get_a_link_for_it(
    client, charlie, charlies_record, paulas_export
):
    client.force_login(charlie)
    assert client.get(f"/privacy/exports/{paulas_export.pk}/").status_code == 404
    assert client.post(f"/privacy/exports/{paulas_export.pk}/link/").status_code == 404
    paulas_export.refresh_from_db()
    assert paulas_export.token_hash is None


def test_the_patient_requests_an_export_sees_it_ready_and_downloads_it_once_linked(
    client, paula, paulas_record, django_capture_on_commit_callbacks
):
    client.force_login(paula)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/privacy/exports/", {"patient": paulas_record.pk})
    export = DataExport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/privacy/exports/{export.pk}/"
    detail = client.get(response["Location"]).content.decode()
    assert f'action="/privacy/exports/{export.pk}/link/"' in detail
    assert "/privacy/download/" not in detail  # the link is shown only when asked for

    linked = client.post(f"/privacy/exports/{export.pk}/link/")
    assert linked.status_code == 200 and linked["Cache-Control"] == "no-store"
    link = linked.context["link"]
    assert link.startswith("http://testserver/privacy/download/")
    download = client.get(link.removeprefix("http://testserver"))
    assert download.status_code == 200
    assert b"".join(download.streaming_content)[:2] == b"PK"


def test_no_link_is_issued_for_an_export_that_is_not_ready(client, paula, paulas_record):
    export = DataExport.objects.create(patient=paulas_record, requested_by=paula)
    client.force_login(paula)
    assert client.post(f"/privacy/exports/{export.pk}/link/").status_code == 409
    export.refresh_from_db()
    assert export.token_hash is None


def test_the_forms_are_protected_against_cross_site_requests(paula, paulas_record):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(paula)
    page = browser.get("/privacy/").content.decode()
    assert page.count("csrfmiddlewaretoken") >= 4  # give x3 and export (+ logout, language)
    response = browser.post("/privacy/consents/give/",
                            {"patient": paulas_record.pk, "purpose": "research"})
    assert response.status_code == 403
    assert not Consent.objects.exists()
