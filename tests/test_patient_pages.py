"""The patient's pages: their exams (and only theirs), each exam's images rendered by the
portal, and the links to downloads, the access history and the privacy pages.

charlie, signed in with his own code, gets a 404 for paula's exam and for its images, and
each refusal is on the record.
"""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from PIL import Image

from audit.models import AuditAction, AuditEvent, Outcome
from imaging.models import Instance, Patient, Study
from patients import codes

from .conftest import ingest_paths


@pytest.fixture
def paulas_study(db, ct_study) -> Study:
    ingest_paths(ct_study[1])
    return Study.objects.get(study_instance_uid=ct_study[0])


@pytest.fixture
def charlies_study(db, other_study) -> Study:
    ingest_paths(other_study[1])
    return Study.objects.get(study_instance_uid=other_study[0])


def signed_in_with_code(client, tina, patient_id: str, birth_date: str):
    patient = Patient.objects.get(patient_id=patient_id)
    _access, code = codes.issue_code(patient, tina)
    response = client.post("/patient/", {"code": code, "birth_date": birth_date})
    assert response.status_code == 302
    return client


@pytest.fixture
def paula_client(client, tina, paulas_study, charlies_study):
    return signed_in_with_code(client, tina, "PAULA-001", "1975-04-12")


@pytest.fixture
def charlie_client(client, tina, paulas_study, charlies_study):
    return signed_in_with_code(client, tina, "CHARLIE-002", "1990-09-30")


def exam_url(study: Study) -> str:
    return reverse("patients:exam_detail", args=[study.study_instance_uid])


def image_url(study: Study, instance: Instance, frame: int = 0) -> str:
    return reverse("patients:frame_image",
                   args=[study.study_instance_uid, instance.sop_instance_uid, frame])


def test_the_sign_in_page_offers_the_code_and_the_account(client, db):
    page = client.get("/patient/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="code"' in html and 'name="birth_date"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert "/accounts/login/?next=%2Fpatient%2Fexams%2F" in html
    assert "Meus exames" in html  # pt-BR first
    spanish = client.get("/patient/", HTTP_ACCEPT_LANGUAGE="es")
    assert "Mis exámenes" in spanish.content.decode()


def test_pages_ask_to_sign_in_first(client, paulas_study):
    for url in (reverse("patients:exams"), exam_url(paulas_study)):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/patient/?")


def test_paula_sees_her_exams_and_not_charlies(paula_client, paulas_study, charlies_study):
    page = paula_client.get(reverse("patients:exams"))
    html = page.content.decode()
    assert page.status_code == 200
    assert paulas_study.study_instance_uid in html and "CT tórax" in html
    assert charlies_study.study_instance_uid not in html and "RM crânio" not in html
    assert "02/03/2026" in html and ">CT<" in html
    assert reverse("audit:my_access_history") in html
    assert reverse("privacy:overview") in html
    assert f"{reverse('sharing:link_new')}?study={paulas_study.study_instance_uid}" in html
    listed = AuditEvent.objects.filter(action=AuditAction.SEARCH).last()
    assert listed is not None and listed.patient_ref.startswith("PAULA-001")


def test_a_patient_signed_in_with_an_account_sees_their_exams_too(client, paula,
                                                                  paulas_study):
    Patient.objects.filter(patient_id="PAULA-001").update(user=paula)
    client.force_login(paula)
    html = client.get(reverse("patients:exams")).content.decode()
    assert paulas_study.study_instance_uid in html


def test_the_exam_page_lists_series_and_shows_a_rendered_image(paula_client, paulas_study):
    page = paula_client.get(exam_url(paulas_study))
    assert page.status_code == 200
    series = page.context["series"]
    assert len(series) == 2 and all(len(s["frames"]) == 6 for s in series)
    assert "lung" in page.context["presets"]
    viewed = AuditEvent.objects.filter(action=AuditAction.VIEW, level="study").last()
    assert viewed is not None and viewed.outcome == Outcome.ALLOWED

    instance = Instance.objects.filter(series__study=paulas_study).first()
    assert instance is not None
    response = paula_client.get(image_url(paulas_study, instance))
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "JPEG" and image.size == (128, 128)
    thumb = Image.open(io.BytesIO(paula_client.get(
        image_url(paulas_study, instance) + "?size=thumb").content))
    assert max(thumb.size) <= 128
    lung = paula_client.get(image_url(paulas_study, instance) + "?preset=lung")
    assert lung.status_code == 200 and lung.content != response.content


def test_only_rendered_images_leave_the_portal(paula_client, paulas_study):
    instance = Instance.objects.filter(series__study=paulas_study).first()
    assert instance is not None
    response = paula_client.get(image_url(paulas_study, instance))
    assert not response.content.startswith(b"\0" * 128 + b"DICM")
    assert b"Pereira" not in response.content
    assert paula_client.get(image_url(paulas_study, instance, frame=1)).status_code == 404


def test_charlie_gets_404_for_paulas_exam_and_images_and_it_is_recorded(
        charlie_client, paulas_study, charlies_study):
    assert charlie_client.get(exam_url(charlies_study)).status_code == 200
    assert charlie_client.get(exam_url(paulas_study)).status_code == 404
    instance = Instance.objects.filter(series__study=paulas_study).first()
    assert instance is not None
    assert charlie_client.get(image_url(paulas_study, instance)).status_code == 404
    # paula's image under charlie's own study's URL is no way round either
    assert charlie_client.get(image_url(charlies_study, instance)).status_code == 404
    refused = AuditEvent.objects.filter(outcome=Outcome.DENIED, username__startswith="patient-")
    assert {e.level for e in refused} == {"study", "instance"}
    assert all(e.patient_ref.startswith("PAULA-001") for e in refused)
    unknown = charlie_client.get(reverse("patients:exam_detail", args=["1.2.3.4"]))
    assert unknown.status_code == 404


def test_a_code_session_is_limited_to_the_codes_patient(client, tina, paula, paulas_study,
                                                        charlies_study):
    # An account (no password) linked to two records; a code for one shows only that one.
    patient = Patient.objects.get(patient_id="PAULA-001")
    signed_in_with_code(client, tina, "PAULA-001", "1975-04-12")
    patient.refresh_from_db()
    Patient.objects.filter(patient_id="CHARLIE-002").update(user=patient.user)
    html = client.get(reverse("patients:exams")).content.decode()
    assert paulas_study.study_instance_uid in html
    assert charlies_study.study_instance_uid not in html
    assert client.get(exam_url(charlies_study)).status_code == 404


def test_the_exam_list_says_whether_the_report_is_issued(client, paula, paulas_study, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    Patient.objects.filter(patient_id="PAULA-001").update(user=paula)
    client.force_login(paula)
    page = client.get("/patient/exams/").content.decode()
    assert "Awaiting report" in page or "Aguardando laudo" in page

    # The report system sends a Basic Text SR into the study, as it would by C-STORE.
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.88.11")
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.StudyInstanceUID = paulas_study.study_instance_uid
    sr.SeriesInstanceUID = generate_uid()
    sr.Modality = "SR"
    sr.PatientID = "PAULA-001"
    sr.PatientName = "Pereira^Paula"
    path = tmp_path / "report.dcm"
    sr.save_as(path, enforce_file_format=True)
    ingest_paths([path])

    page = client.get("/patient/exams/").content.decode()
    assert "Report issued" in page or "Laudo emitido" in page
