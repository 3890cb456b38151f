"""The patient's report: "Laudo disponível" once it is final, to read and to download.

A preliminary report is never shown to the patient; an amended one shows its latest final
version, saying it was amended. The PDF is the one in the stored DICOM object. charlie,
and a code session for another patient, get a 404, and the refusals are on the record.
"""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from pydicom import dcmread
from pypdf import PdfReader

from accounts.models import AccessGrant
from audit.models import AuditAction, AuditEvent, Outcome
from audit.trail import Actor
from imaging import blobs
from imaging.models import Patient, Study
from patients import codes
from reports import service

from .conftest import CHARLIE, archived_record

TEXT = service.ReportText("Sem alterações pleuropulmonares.", "Exame normal.")
REASON = "Nódulo visto na revisão."
AMENDED = service.ReportText("Nódulo de 4 mm no lobo superior direito.",
                             "Controle em 12 meses.")


@pytest.fixture
def write(dora, clinic, paulas_record, paulas_study):
    AccessGrant.objects.create(doctor=dora, patient=paulas_record, clinic=clinic)

    def write(kind: str, text: service.ReportText = TEXT):
        extra = {"reason": REASON} if kind == "amend" else {}
        return getattr(service, kind)(dora, Actor.for_user(dora), paulas_study, text, **extra)
    return write


@pytest.fixture
def paula_client(client, paula, paulas_record):
    client.force_login(paula)
    return client


def exams(client) -> str:
    page: str = client.get(reverse("patients:exams"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    return page


def report_url(study: Study) -> str:
    return reverse("patients:exam_report", args=[study.study_instance_uid])


def pdf_url(study: Study) -> str:
    return reverse("patients:exam_report_pdf", args=[study.study_instance_uid])


def test_the_exam_list_says_awaiting_report_while_it_is_preliminary(write, paula_client,
                                                                    paulas_study):
    write("save_preliminary")
    page = exams(paula_client)
    assert "Awaiting report" in page
    assert "Report available" not in page and report_url(paulas_study) not in page
    assert paula_client.get(report_url(paulas_study)).status_code == 404
    assert paula_client.get(pdf_url(paulas_study)).status_code == 404


def test_the_exam_list_says_report_available_once_final(write, paula_client, paulas_study):
    write("finalize")
    page = exams(paula_client)
    assert "Report available" in page and "Awaiting report" not in page
    assert report_url(paulas_study) in page and pdf_url(paulas_study) in page


def test_the_patient_reads_the_final_report(write, paula_client, paulas_study):
    report = write("finalize")
    page = paula_client.get(report_url(paulas_study), HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    text = page.content.decode()
    assert TEXT.findings in text and TEXT.impression in text
    assert "Dora Lima — CRM-RS 12345" in text
    assert 'id="amended"' not in text
    assert AuditEvent.objects.filter(action=AuditAction.VIEW, outcome=Outcome.ALLOWED,
                                     username="paula", detail__report=report.pk).exists()


def test_the_patient_downloads_the_pdf_stored_in_the_dicom_object(write, paula_client,
                                                                  paulas_study):
    report = write("finalize")
    response = paula_client.get(pdf_url(paulas_study))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("attachment;")
    body = b"".join(response.streaming_content)
    with blobs.open_blob(report.instance.blob_key) as fp:
        ds = dcmread(fp)
    assert body == bytes(ds.EncapsulatedDocument)[:ds.EncapsulatedDocumentLength]
    assert int(response["Content-Length"]) == len(body)
    assert "Sem alterações pleuropulmonares." in PdfReader(io.BytesIO(body)).pages[0] \
        .extract_text()
    assert AuditEvent.objects.filter(action=AuditAction.DOWNLOAD, outcome=Outcome.ALLOWED,
                                     username="paula", detail__report=report.pk).exists()


def test_an_amended_report_shows_its_latest_final_version_saying_so(write, paula_client,
                                                                    paulas_study):
    write("finalize")
    amended = write("amend", AMENDED)
    assert "Report available (amended)" in exams(paula_client)
    page = paula_client.get(report_url(paulas_study), HTTP_ACCEPT_LANGUAGE="en")
    text = page.content.decode()
    assert AMENDED.findings in text and TEXT.findings not in text
    assert 'id="amended"' in text and REASON in text
    body = b"".join(paula_client.get(pdf_url(paulas_study)).streaming_content)
    assert "Nódulo de 4 mm" in PdfReader(io.BytesIO(body)).pages[0].extract_text()
    assert amended.version == 2


def test_the_patient_cannot_reach_an_earlier_version_by_its_number(write, paula_client):
    write("finalize")
    latest = write("amend", AMENDED)
    first = latest.supersedes
    response = paula_client.get(reverse("reports:pdf", args=[first.pk]))
    assert response.status_code == 404  # superseded: the reporting doctors' own
    assert paula_client.get(reverse("reports:pdf", args=[latest.pk])
                            ).status_code == 200


def test_the_exam_page_links_the_final_report(write, paula_client, paulas_study):
    exam = reverse("patients:exam_detail", args=[paulas_study.study_instance_uid])
    write("save_preliminary")
    assert report_url(paulas_study) not in paula_client.get(exam).content.decode()
    write("finalize")
    assert report_url(paulas_study) in paula_client.get(exam).content.decode()


def test_charlie_gets_404_for_paulas_report_and_it_is_recorded(write, client, charlie,
                                                               charlies_record, paulas_study):
    write("finalize")
    client.force_login(charlie)
    assert "Report available" not in exams(client)
    assert client.get(report_url(paulas_study)).status_code == 404
    assert client.get(pdf_url(paulas_study)).status_code == 404
    refused = AuditEvent.objects.filter(username="charlie", outcome=Outcome.DENIED,
                                        study_uid=paulas_study.study_instance_uid)
    assert sorted(refused.values_list("action", flat=True)) == ["download", "view"]


def test_a_code_session_sees_only_its_patients_report(write, client, tina, other_study,
                                                      paulas_study):
    write("finalize")
    archived_record(other_study, CHARLIE.patient_id)
    _access, code = codes.issue_code(Patient.objects.get(patient_id=CHARLIE.patient_id), tina)
    assert client.post("/patient/", {"code": code, "birth_date": "1990-09-30"}
                       ).status_code == 302
    assert client.get(report_url(paulas_study)).status_code == 404
    assert client.get(pdf_url(paulas_study)).status_code == 404
    report = service.current_report(paulas_study)
    assert report is not None
    assert client.get(reverse("reports:pdf", args=[report.pk])).status_code == 404


def test_an_unknown_exam_has_no_report(paula_client):
    assert paula_client.get(reverse("patients:exam_report", args=["1.2.3.4.5"])
                            ).status_code == 404
    assert AuditEvent.objects.filter(object_uid="1.2.3.4.5", outcome=Outcome.FAILED).exists()
