"""A report version is a valid DICOM Encapsulated PDF filed under its study.

The object is a Part 10 file that DCMTK reads; its EncapsulatedDocument is the PDF (padded
to an even length, its own length beside it); its patient and study are the study's as
stored, in a report series of its own; and the PDF says what the doctor wrote, accents
and dashes included.
"""

from __future__ import annotations

import datetime
import io
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import EncapsulatedPDFStorage
from pypdf import PdfReader

from accounts.models import AccessGrant
from imaging import blobs
from imaging.models import Instance
from reports import dicom_report, pdf, reading, service
from reports.models import Report

FINDINGS = "Pulmões expandidos, sem consolidações. Coração de dimensões normais — ≥ 5 mm."
IMPRESSION = "Exame dentro da normalidade; correlação clínica."


@pytest.fixture
def report(dora, clinic, paulas_record, paulas_study) -> Report:
    AccessGrant.objects.create(doctor=dora, patient=paulas_record, clinic=clinic)
    from audit.trail import Actor

    return service.finalize(dora, Actor.for_user(dora), paulas_study,
                            service.ReportText(FINDINGS, IMPRESSION))


def stored_bytes(report: Report) -> bytes:
    with blobs.open_blob(report.instance.blob_key) as fp:
        return fp.read()


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_dcmtk_reads_the_stored_object_as_an_encapsulated_pdf(report, tmp_path: Path):
    if shutil.which("dcmdump") is None:
        pytest.skip("needs DCMTK's dcmdump")
    path = tmp_path / "report.dcm"
    path.write_bytes(stored_bytes(report))
    dump = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True,
                          check=True).stdout
    assert "=EncapsulatedPDFStorage" in dump
    assert "(0008,0060) CS [DOC]" in dump
    assert "(0042,0012) LO [application/pdf]" in dump
    assert "EncapsulatedDocumentLength" in dump
    assert "# Dicom-Meta-Information-Header" in dump


def test_dcm2pdf_extracts_the_same_pdf(report, tmp_path: Path):
    if shutil.which("dcm2pdf") is None:
        pytest.skip("needs DCMTK's dcm2pdf")
    path, out = tmp_path / "report.dcm", tmp_path / "report.pdf"
    path.write_bytes(stored_bytes(report))
    subprocess.run(["dcm2pdf", str(path), str(out)], check=True, capture_output=True)
    assert b"".join(reading.open_pdf(report)[0]) == out.read_bytes().rstrip(b"\0")


def test_the_encapsulated_document_is_the_pdf_with_an_even_length(report):
    ds = dcmread(io.BytesIO(stored_bytes(report)))
    document = bytes(ds.EncapsulatedDocument)
    assert len(document) % 2 == 0
    assert document.startswith(b"%PDF-")
    assert ds.EncapsulatedDocumentLength in (len(document), len(document) - 1)
    assert b"".join(reading.open_pdf(report)[0]) == document[:ds.EncapsulatedDocumentLength]


def test_the_object_files_under_the_studys_patient_and_study(report, paulas_study):
    ds = dcmread(io.BytesIO(stored_bytes(report)))
    image = Instance.objects.filter(series__study=paulas_study).exclude(
        pk=report.instance.pk).earliest("pk")
    source = dcmread(io.BytesIO(blobs.open_blob(image.blob_key).read()))
    assert ds.StudyInstanceUID == paulas_study.study_instance_uid
    assert (ds.PatientID, str(ds.PatientName)) == (source.PatientID, str(source.PatientName))
    assert ds.PatientBirthDate == source.PatientBirthDate
    assert ds.AccessionNumber == source.AccessionNumber
    assert report.instance.series.study_id == paulas_study.pk


def test_the_object_has_its_own_uids_report_series_and_document_attributes(report):
    ds = dcmread(io.BytesIO(stored_bytes(report)))
    assert ds.SOPClassUID == EncapsulatedPDFStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPInstanceUID == report.instance.sop_instance_uid
    assert ds.Modality == "DOC"
    assert ds.SeriesInstanceUID not in {s.series_instance_uid for s in
                                        report.study.series.exclude(modality="DOC")}
    assert ds.DocumentTitle
    assert ds.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.ContentDate and ds.ContentTime
    assert ds.InstanceNumber == report.version


def test_the_pdf_says_the_findings_impression_and_signature(report):
    text = pdf_text(b"".join(reading.open_pdf(report)[0]))
    flat = " ".join(text.split())
    assert "Pulmões expandidos, sem consolidações." in flat
    assert "Coração de dimensões normais — ≥ 5 mm." in flat
    assert IMPRESSION in flat
    assert "Dora Lima — CRM-RS 12345" in flat


def test_without_a_truetype_font_the_pdf_falls_back_to_latin_1(tmp_path: Path):
    document = pdf.ReportDocument(
        title="Laudo", facts=[("Paciente", "Conceição Araújo")],
        sections=[("Achados", "Sem alterações — nódulo ≥ 5 mm")], status="Final",
        signature=["Dora Lima — CRM-RS 12345"])
    text = " ".join(pdf_text(pdf.render(document, tmp_path / "no-such-font.ttf")).split())
    assert "Conceição Araújo" in text
    assert "Sem alterações - nódulo >= 5 mm" in text
    assert "Dora Lima - CRM-RS 12345" in text


def test_an_odd_length_pdf_is_padded_and_its_length_kept():
    study = {"0020000D": {"vr": "UI", "Value": ["1.2.3.4"]}}
    made = dicom_report.encapsulated_pdf(study, b"%PDF-1.4 odd!", title="Laudo",
                                         content=datetime.datetime(2026, 3, 2, 10, 30))
    ds = dcmread(io.BytesIO(made.data))
    assert bytes(ds.EncapsulatedDocument) == b"%PDF-1.4 odd!\0"
    assert ds.EncapsulatedDocumentLength == 13
    offset, length = dicom_report.pdf_span(io.BytesIO(made.data))
    assert made.data[offset:offset + length] == b"%PDF-1.4 odd!"
    assert ds.PatientID == "" and "PatientName" in ds  # Type 2, empty when unknown
