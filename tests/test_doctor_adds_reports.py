"""A doctor who may read a patient's study adds her measurements to it as a DICOM SR (OHIF's
"Create report", a STOW-RS from the viewer), through the one ingest path. She still may
not store images, nor add anything to a study she may not read; a study she may not read
and one that does not exist get the same refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from accounts.models import AccessGrant
from audit.models import AuditAction, AuditEvent, Outcome
from dicomweb import stow
from imaging.added_reports import REFUSED
from imaging.models import Instance, Series

BOUNDARY = "report-7f3a"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
PATIENT_AND_STUDY = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                     "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                     "StudyID", "ReferringPhysicianName", "StudyDescription"]


def measurement_report(image: Path, folder: Path, *, study_uid: str | None = None) -> Path:
    """A TID 1500 Measurement Report header on ``image``'s study, as OHIF writes one."""
    source = dcmread(image, stop_before_pixels=True)
    ds = Dataset()
    for keyword in PATIENT_AND_STUDY:
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    if study_uid:
        ds.StudyInstanceUID = study_uid
    ds.SOPClassUID = COMPREHENSIVE_SR
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesNumber = 3001
    ds.SeriesDescription = "Medidas"
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "PARTIAL"
    ds.VerificationFlag = "UNVERIFIED"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "126000", "DCM"
    concept.CodeMeaning = "Imaging Measurement Report"
    ds.ConceptNameCodeSequence = [concept]
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "1500"
    ds.ContentTemplateSequence = [template]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def stow_from_the_viewer(client: Client, path: Path):
    """The POST OHIF's DICOMweb client sends from a page of the portal."""
    body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + path.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode())
    return client.post("/dicomweb/studies", data=body, content_type=CONTENT_TYPE,
                       headers={"Accept": "application/dicom+json",
                                "Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"})


@pytest.fixture
def doras_browser(dora) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(dora)
    return client


@pytest.fixture
def granted(dora, clinic, paulas_record) -> AccessGrant:
    return AccessGrant.objects.create(doctor=dora, patient=paulas_record, clinic=clinic)


def failure(response) -> tuple[int, str]:
    (item,) = response.json()[stow.FAILED_SOP_SEQUENCE]["Value"]
    return item[stow.FAILURE_REASON]["Value"][0], item[stow.ERROR_COMMENT]["Value"][0]


def test_a_doctor_with_a_grant_adds_a_measurement_report_to_her_patients_study(
        doras_browser, granted, paulas_study, ct_study, tmp_path):
    report = measurement_report(ct_study[1][0], tmp_path)
    response = stow_from_the_viewer(doras_browser, report)
    assert response.status_code == 200, response.content
    (sr,) = Instance.objects.filter(sop_class_uid=COMPREHENSIVE_SR)
    assert sr.series.study == paulas_study and sr.series.modality == "SR"
    assert Series.objects.filter(study=paulas_study).count() == 3  # two CT series and it
    (entry,) = AuditEvent.objects.filter(action=AuditAction.STORE, username="dora")
    assert entry.study_uid == paulas_study.study_instance_uid
    assert entry.detail["via"] == "stow-rs" and entry.detail["stored"] == [sr.sop_instance_uid]


def test_a_doctor_may_not_store_images_even_into_her_patients_study(
        doras_browser, granted, paulas_study, ct_study, tmp_path):
    image = dcmread(ct_study[1][0])
    image.SOPInstanceUID = image.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "image.dcm"
    image.save_as(path, enforce_file_format=True)
    before = Instance.objects.count()

    response = stow_from_the_viewer(doras_browser, path)
    assert response.status_code == 409
    assert failure(response) == (stow.NOT_AUTHORIZED, REFUSED)
    assert Instance.objects.count() == before
    entry = AuditEvent.objects.get(action=AuditAction.STORE, outcome=Outcome.DENIED)
    assert entry.username == "dora" and "not a structured report" in entry.reason


def test_a_study_she_may_not_read_and_one_not_in_the_archive_are_refused_alike(
        doras_browser, granted, paulas_study, charlies_study, ct_study, other_study,
        tmp_path):
    charlies = measurement_report(other_study[1][0], tmp_path)
    unknown = measurement_report(ct_study[1][0], tmp_path, study_uid=generate_uid())
    before = Instance.objects.count()

    answers = [stow_from_the_viewer(doras_browser, path) for path in (charlies, unknown)]
    assert [a.status_code for a in answers] == [409, 409]
    assert failure(answers[0]) == failure(answers[1]) == (stow.NOT_AUTHORIZED, REFUSED)
    assert Instance.objects.count() == before
    reasons = sorted(AuditEvent.objects.filter(
        action=AuditAction.STORE, outcome=Outcome.DENIED).values_list("reason", flat=True))
    assert reasons == ["no care relationship or grant for this patient", "no such study"]


def test_a_patient_may_not_add_reports(paula, paulas_study, ct_study, tmp_path):
    client = Client(enforce_csrf_checks=True)
    client.force_login(paula)
    response = stow_from_the_viewer(client, measurement_report(ct_study[1][0], tmp_path))
    assert response.status_code == 403
