"""Sharing a study with an outside professional: a patient with the sharing consent, or a
doctor with access, sends a view-only link by email; it shows the study's images, expires,
can be revoked, and every step is on the audit trail."""

from __future__ import annotations

import datetime
import io
import re
from collections.abc import Iterator
from typing import cast

import pytest
import requests
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from accounts.models import AccessGrant, Clinic, Consent, Purpose
from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from imaging.models import Instance, Patient, Study
from privacy import consent as consents
from privacy.consent import ConsentRequired
from sharing import services
from sharing.models import Share

from .conftest import ingest_paths

LINK = re.compile(r"https?://\S+/v/[A-Za-z0-9_-]+")










@pytest.fixture
def paula_consents(paula, paulas_study) -> Consent:
    return consents.give(paulas_study.patient, Purpose.SHARING, consents.CURRENT_TEXT_VERSION,
                         Consent.Channel.PORTAL, paula)


@pytest.fixture
def doras_grant(dora, paulas_study) -> AccessGrant:
    clinic = Clinic.objects.create(name="Clínica Central")
    dora.clinics.add(clinic)
    return AccessGrant.objects.create(doctor=dora, patient=paulas_study.patient, clinic=clinic)


def share_form(client, study: Study, **fields: str):
    data = {"study": study.study_instance_uid, "email": "dr.who@outside.example",
            "name": "Dr. Who", "days": "7", **fields}
    return client.post(reverse("sharing:share_new"), data)


def share(user, study: Study, **kwargs) -> tuple[Share, str]:
    return services.share_with_professional(
        user, study, "dr.who@outside.example", actor=Actor.for_user(user),
        link_url=lambda token: f"http://testserver/v/{token}", **kwargs)


def share_to(user, study: Study, address: str) -> tuple[Share, str]:
    return services.share_with_professional(
        user, study, address, actor=Actor.for_user(user),
        link_url=lambda token: f"http://testserver/v/{token}")


def token_in(message: mail.EmailMessage) -> str:
    match = LINK.search(str(message.body))
    assert match, message.body
    return match[0].rsplit("/v/", 1)[1]


def test_a_patient_without_the_sharing_consent_is_refused_with_a_clear_message(
        client, paula, paulas_study):
    client.force_login(paula)
    response = share_form(client, paulas_study)
    assert response.status_code == 403
    assert response.context["consent_missing"]
    assert reverse("privacy:overview") in response.content.decode()
    assert not Share.objects.exists()
    assert mail.outbox == []
    denied = AuditEvent.objects.get(action=AuditAction.SHARE, outcome=Outcome.DENIED)
    assert denied.reason == "no sharing consent"
    assert denied.study_uid == paulas_study.study_instance_uid


def test_with_consent_the_professional_gets_an_email_with_a_link_to_the_images(
        client, paula, paulas_study, paula_consents):
    client.force_login(paula)
    response = share_form(client, paulas_study, message="Please look at the left lung.")
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["dr.who@outside.example"]
    assert "Please look at the left lung." in message.body
    token = token_in(message)

    client.logout()
    page = client.get(reverse("sharing:share_view", args=[token]))
    assert page.status_code == 200
    html = page.content.decode()
    images = re.findall(r'src="(/v/[^"]+\.jpg)"', html)
    assert len(images) == paulas_study.num_instances == 12
    assert reverse("sharing:share_download", args=[token]) not in html  # view only
    picture = client.get(images[0])
    assert picture.status_code == 200 and picture["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(picture.content)).size == (128, 128)

    given = AuditEvent.objects.get(action=AuditAction.SHARE, outcome=Outcome.ALLOWED)
    assert given.username == "paula" and given.detail["recipient"] == "dr.who@outside.example"
    page_view, image_view = AuditEvent.objects.filter(
        action=AuditAction.VIEW, outcome=Outcome.ALLOWED).order_by("seq")
    assert page_view.username == image_view.username == "share:dr.who@outside.example"
    assert page_view.study_uid == image_view.study_uid == paulas_study.study_instance_uid
    assert image_view.level == "instance" and image_view.detail["read_session"] == "opened"


def test_consent_is_checked_at_the_moment_of_sharing(paula, paulas_study, paula_consents):
    share(paula, paulas_study)
    consents.revoke(paula_consents, paula)
    with pytest.raises(consents.ConsentRequired):
        share(paula, paulas_study)
    assert Share.objects.count() == 1


def test_a_share_shows_only_the_shared_study(client, paula, paulas_study, charlies_study,
                                            paula_consents):
    _share, token = share(paula, paulas_study)
    charlies = Instance.objects.filter(series__study=charlies_study).first()
    assert charlies is not None
    url = reverse("sharing:share_image", args=[token, charlies.sop_instance_uid])
    assert client.get(url).status_code == 404
    assert "Costa" not in client.get(reverse("sharing:share_view", args=[token])).content \
        .decode()


def test_charlie_cannot_share_paulas_study(client, charlie, paulas_study):
    consents.give(paulas_study.patient, Purpose.SHARING, consents.CURRENT_TEXT_VERSION,
                  Consent.Channel.PORTAL, None)
    client.force_login(charlie)
    assert share_form(client, paulas_study).status_code == 404
    with pytest.raises(services.NotAllowed):
        share(charlie, paulas_study)
    assert not Share.objects.exists() and mail.outbox == []


def test_a_revoked_share_is_refused(client, paula, paulas_study, paula_consents):
    shared, token = share(paula, paulas_study)
    client.force_login(paula)
    assert client.post(reverse("sharing:share_revoke", args=[shared.pk])).status_code == 302
    client.logout()
    response = client.get(reverse("sharing:share_view", args=[token]))
    assert response.status_code == 410
    assert response.context["reason"] == "revoked"
    instance = Instance.objects.filter(series__study=paulas_study).first()
    assert instance is not None
    image = client.get(reverse("sharing:share_image", args=[token, instance.sop_instance_uid]))
    assert image.status_code == 410
    steps = [e.detail.get("step") for e in AuditEvent.objects.filter(
        action=AuditAction.SHARE, outcome=Outcome.ALLOWED).order_by("seq")]
    assert steps == ["share", "revoke_share"]
    assert AuditEvent.objects.filter(action=AuditAction.VIEW, outcome=Outcome.DENIED,
                                     reason="share revoked").exists()


def test_an_expired_share_is_refused(client, paula, paulas_study, paula_consents):
    shared, token = share(paula, paulas_study)
    Share.objects.filter(pk=shared.pk).update(expires=timezone.now() - datetime.timedelta(1))
    response = client.get(reverse("sharing:share_view", args=[token]))
    assert response.status_code == 410
    assert response.context["reason"] == "expired"


def test_a_doctor_with_access_needs_the_patients_consent_too(dora, paulas_study,
                                                              doras_grant):
    with pytest.raises(ConsentRequired):
        share(dora, paulas_study)
    assert not Share.objects.exists() and not mail.outbox
    refused = AuditEvent.objects.get(action=AuditAction.SHARE, outcome=Outcome.DENIED)
    assert refused.reason == "no sharing consent" and refused.username == "dora"


def test_a_doctor_may_share_on_a_recorded_legal_basis_with_a_reason(dora, paulas_study,
                                                                    doras_grant):
    reason = "Transferência para o hospital de referência em cardiologia"
    shared, _token = share(dora, paulas_study, legal_basis="health_protection",
                           basis_reason=reason)
    assert (shared.created_by, shared.basis, shared.basis_reason) == (
        dora, "health_protection", reason)
    assert len(mail.outbox) == 1
    given = AuditEvent.objects.get(action=AuditAction.SHARE, outcome=Outcome.ALLOWED)
    assert given.detail["basis"] == "health_protection"
    assert given.detail["recipient"] == "dr.who@outside.example"


def test_a_legal_basis_needs_a_known_basis_and_a_written_reason(dora, paulas_study,
                                                                doras_grant):
    with pytest.raises(services.InvalidRequest):
        share(dora, paulas_study, legal_basis="because", basis_reason="x" * 30)
    with pytest.raises(services.InvalidRequest):
        share(dora, paulas_study, legal_basis="court_order", basis_reason="urgent")
    assert not Share.objects.exists()


def test_patients_cannot_share_on_a_legal_basis(paula, paulas_study):
    with pytest.raises(services.InvalidRequest):
        share(paula, paulas_study, legal_basis="health_protection",
              basis_reason="I want my cardiologist to see it")


def test_a_share_stops_when_the_consent_it_rests_on_is_revoked(client, paula, paulas_study,
                                                               paula_consents):
    _shared, token = share(paula, paulas_study)
    assert client.get(reverse("sharing:share_view", args=[token])).status_code == 200
    consents.revoke(paula_consents, paula)
    response = client.get(reverse("sharing:share_view", args=[token]))
    assert response.status_code == 410 and response.context["reason"] == "withdrawn"
    assert AuditEvent.objects.filter(action=AuditAction.VIEW, outcome=Outcome.DENIED,
                                     reason="share withdrawn").exists()


def test_a_doctors_share_stops_when_her_grant_ends(client, dora, paulas_study, doras_grant,
                                                   paula_consents):
    _shared, token = share(dora, paulas_study)
    assert client.get(reverse("sharing:share_view", args=[token])).status_code == 200
    AccessGrant.objects.filter(pk=doras_grant.pk).update(
        ends=timezone.now() - datetime.timedelta(minutes=1))
    assert client.get(reverse("sharing:share_view", args=[token])).status_code == 410


def test_the_recipient_address_is_validated(paula, paulas_study, paula_consents):
    with pytest.raises(services.InvalidRequest):
        share_to(paula, paulas_study, "not an address")
    assert not Share.objects.exists()


def test_a_doctor_without_access_cannot_share(client, dora, paulas_study):
    client.force_login(dora)
    assert share_form(client, paulas_study).status_code == 404
    with pytest.raises(services.NotAllowed):
        share(dora, paulas_study)


def test_download_only_when_the_share_allows_it(client, paula, paulas_study, paula_consents):
    _viewing, view_only = share(paula, paulas_study)
    assert client.get(reverse("sharing:share_download", args=[view_only])).status_code == 404
    _downloading, token = share(paula, paulas_study, allow_download=True)
    page = client.get(reverse("sharing:share_view", args=[token])).content.decode()
    assert reverse("sharing:share_download", args=[token]) in page
    response = client.get(reverse("sharing:share_download", args=[token]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    data = b"".join(cast(Iterator[bytes], response.streaming_content))
    assert data[:4] == b"PK\x03\x04"
    assert AuditEvent.objects.filter(action=AuditAction.DOWNLOAD, outcome=Outcome.ALLOWED,
                                     username="share:dr.who@outside.example").exists()


@pytest.mark.django_db(transaction=True)
def test_the_professional_opens_the_link_over_http(live_server, paula, ct_study, settings):
    ingest_paths(ct_study[1])
    Patient.objects.filter(patient_id="PAULA-001").update(user=paula)
    study = Study.objects.get(study_instance_uid=ct_study[0])
    consents.give(study.patient, Purpose.SHARING, consents.CURRENT_TEXT_VERSION,
                  Consent.Channel.PORTAL, paula)
    _shared, token = share(paula, study)
    page = requests.get(f"{live_server.url}/v/{token}", timeout=30)
    assert page.status_code == 200
    first = re.findall(r'src="(/v/[^"]+\.jpg)"', page.text)[0]
    image = requests.get(f"{live_server.url}{first}", timeout=30)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
    wrong = requests.get(f"{live_server.url}/v/{token[:-2]}xx", timeout=30)
    assert wrong.status_code == 404 and "Traceback" not in wrong.text


def test_the_share_page_offers_staff_a_legal_basis_when_consent_is_missing(client, dora,
                                                                           paulas_study,
                                                                           doras_grant):
    client.force_login(dora)
    refused = share_form(client, paulas_study)
    assert refused.status_code == 403 and refused.context["consent_missing"]
    assert b'name="legal_basis"' in refused.content
    shared = share_form(client, paulas_study, legal_basis="health_protection",
                        basis_reason="Encaminhamento ao cardiologista de referência")
    assert shared.status_code == 302
    assert Share.objects.get().basis == "health_protection"


def test_the_share_page_sends_a_patient_without_consent_to_her_privacy_page(client, paula,
                                                                            paulas_study):
    client.force_login(paula)
    refused = share_form(client, paulas_study)
    assert refused.status_code == 403
    assert b'name="legal_basis"' not in refused.content
    assert reverse("privacy:overview").encode() in refused.content
