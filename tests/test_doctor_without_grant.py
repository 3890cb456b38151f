"""A doctor without a grant for a patient gets 404 on every page and every DICOMweb URL of
that patient, as if nothing were there, and each attempt is on the audit trail.

dora works at paula's clinic but has no grant for her; alice (superuser) has written and
finalized paula's report, so every page of the workspace exists for paula's study.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent, Outcome
from audit.trail import Actor
from imaging.models import Instance, Study
from reports import service


@pytest.fixture
def reported(alice, paulas_study: Study) -> Study:
    alice.first_name, alice.last_name, alice.professional_id = "Alice", "Ramos", "CRM-SP 999"
    alice.save()
    text = service.ReportText("Sem alterações pleuropulmonares.", "Exame normal.")
    service.finalize(alice, Actor.for_user(alice), paulas_study, text)
    return paulas_study


def _urls(study: Study) -> list[tuple[str, dict[str, str]]]:
    uid = study.study_instance_uid
    # The first stored, an image: the finalized report is an SR instance of the study too,
    # with no frames, and an unordered first() may pick it.
    instance = (Instance.objects.filter(series__study=study).select_related("series")
                .order_by("pk").first())
    assert instance is not None
    series, sop = instance.series.series_instance_uid, instance.sop_instance_uid
    report = service.current_report(study)
    assert report is not None
    dicomweb = f"/dicomweb/studies/{uid}"
    json = {"Accept": "application/dicom+json"}
    return [
        (reverse("imaging:patient_timeline", args=[study.patient_id]), {}),
        (reverse("imaging:study_detail", args=[uid]), {}),
        (reverse("imaging:instance_header", args=[uid, sop]), {}),
        (reverse("reports:editor", args=[uid]), {}),
        (reverse("reports:pdf", args=[report.pk]), {}),
        (f"{dicomweb}/metadata", json),
        (f"{dicomweb}/series/{series}/metadata", json),
        (f"{dicomweb}/series/{series}/instances/{sop}/metadata", json),
        (f"{dicomweb}/series/{series}/instances/{sop}", {"Accept": "*/*"}),
        (f"{dicomweb}/series/{series}/instances/{sop}/frames/1", {"Accept": "*/*"}),
        (f"{dicomweb}/series/{series}/instances/{sop}/rendered", {"Accept": "image/jpeg"}),
        (f"{dicomweb}/series/{series}/thumbnail", {"Accept": "image/jpeg"}),
        (f"{dicomweb}/thumbnail", {"Accept": "image/jpeg"}),
        (dicomweb, {"Accept": "*/*"}),
    ]


def test_every_page_and_dicomweb_url_of_the_patient_is_a_404_on_the_record(dora, reported):
    client = Client()
    client.force_login(dora)
    for url, headers in _urls(reported):
        before = AuditEvent.objects.filter(username="dora", outcome=Outcome.DENIED).count()
        response = client.get(url, headers=headers)
        assert response.status_code == 404, url
        assert b"Pereira" not in response.content, url
        denied = AuditEvent.objects.filter(username="dora", outcome=Outcome.DENIED).count()
        assert denied == before + 1, f"{url}: the attempt is not on the record"


def test_searching_finds_nothing_of_the_patient(dora, reported):
    client = Client()
    client.force_login(dora)
    qido = client.get("/dicomweb/studies", {"PatientID": reported.patient.patient_id},
                      HTTP_ACCEPT="application/dicom+json")
    assert qido.status_code in (200, 204) and reported.study_instance_uid.encode() not in \
        qido.content
    series = client.get(f"/dicomweb/studies/{reported.study_instance_uid}/series",
                        HTTP_ACCEPT="application/dicom+json")
    assert series.status_code in (200, 204) and series.content in (b"", b"[]")
    page = client.get(reverse("imaging:study_list"), {"q": reported.patient.patient_id})
    assert page.status_code == 200 and b"Pereira" not in page.content


def test_the_same_doctor_with_a_grant_reaches_every_one_of_them(dora, clinic, reported):
    from accounts.models import AccessGrant

    AccessGrant.objects.create(doctor=dora, patient=reported.patient, clinic=clinic)
    client = Client()
    client.force_login(dora)
    for url, headers in _urls(reported):
        assert client.get(url, headers=headers).status_code == 200, url
