"""A report as a DICOM Encapsulated PDF object (PS3.3 A.45.1), and its PDF read back.

Pure DICOM (pydicom only, no ORM). The object files under the study it reports on: its
Patient and General Study attributes are copied from an object of that study as stored
(its DICOM JSON metadata), so ingest indexes it under the same patient and study. It lives
in a report series of its own (Modality ``DOC``), with UIDs of its own.
"""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass
from typing import IO, Any

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

MODALITY = "DOC"
PDF_MIME_TYPE = "application/pdf"
#: LOINC 18748-4, the code report systems give a diagnostic imaging report.
REPORT_CONCEPT = ("18748-4", "LN", "Diagnostic imaging study")
#: Patient and General Study attributes (by DICOM JSON tag) copied from the study's
#: objects; the Type 2 ones are written empty when the study has no value.
PATIENT_AND_STUDY = {
    "00100010": "PatientName",
    "00100020": "PatientID",
    "00100021": "IssuerOfPatientID",
    "00100030": "PatientBirthDate",
    "00100040": "PatientSex",
    "0020000D": "StudyInstanceUID",
    "00080020": "StudyDate",
    "00080030": "StudyTime",
    "00080050": "AccessionNumber",
    "00080090": "ReferringPhysicianName",
    "00200010": "StudyID",
    "00081030": "StudyDescription",
}
TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID")
UNDEFINED_LENGTH = 0xFFFFFFFF
ENCAPSULATED_DOCUMENT = Tag("EncapsulatedDocument")
ENCAPSULATED_DOCUMENT_LENGTH = Tag("EncapsulatedDocumentLength")


class NotAReportPdf(ValueError):
    """The object holds no encapsulated PDF."""


@dataclass(frozen=True)
class ReportObject:
    """One report version as DICOM: the Part 10 bytes and the UIDs it was given."""

    data: bytes
    sop_instance_uid: str
    series_instance_uid: str


def study_attributes(metadata: dict[str, Any]) -> dict[str, Any]:
    """The Patient and General Study attributes of a stored object's DICOM JSON
    metadata (``imaging.models.Instance.metadata``), as DICOM JSON."""
    return {tag: value for tag, value in metadata.items() if tag in PATIENT_AND_STUDY}


def encapsulated_pdf(
    study: dict[str, Any], pdf: bytes, *, title: str, content: datetime.datetime,
    series_instance_uid: str | None = None, series_number: int = 999,
    instance_number: int = 1, series_description: str = "",
    manufacturer: str = "imaging-portal",
) -> ReportObject:
    """An Encapsulated PDF object holding ``pdf`` for the study described by ``study``
    (DICOM JSON, see :func:`study_attributes`).

    Parameters
    ----------
    study
        The study's Patient and General Study attributes; StudyInstanceUID is required.
    pdf
        The document. Padded to an even length in EncapsulatedDocument; its own length is
        EncapsulatedDocumentLength.
    title
        DocumentTitle ("Laudo", "Laudo preliminar").
    content
        When the content was written (ContentDate/Time, AcquisitionDateTime).
    series_instance_uid
        The study's report series, if it has one already; else a new one.
    """
    source = Dataset.from_json(study_attributes(study))
    if not source.get("StudyInstanceUID"):
        raise ValueError("the study's attributes have no StudyInstanceUID")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = generate_uid()
    now = datetime.datetime.now(tz=content.tzinfo)
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    for keyword in PATIENT_AND_STUDY.values():
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
        elif keyword in TYPE_2:
            setattr(ds, keyword, "")
    # Encapsulated Document Series, General and SC Equipment
    ds.Modality = MODALITY
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.SeriesNumber = series_number
    if series_description:
        ds.SeriesDescription = series_description[:64]
    ds.Manufacturer = manufacturer
    ds.ConversionType = "WSD"  # made on a workstation
    # Encapsulated Document
    ds.InstanceNumber = instance_number
    ds.ContentDate = content.strftime("%Y%m%d")
    ds.ContentTime = content.strftime("%H%M%S")
    ds.AcquisitionDateTime = content.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # the PDF names the patient
    ds.DocumentTitle = title[:64]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = REPORT_CONCEPT
    ds.ConceptNameCodeSequence = [code]
    ds.MIMETypeOfEncapsulatedDocument = PDF_MIME_TYPE
    ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)
    ds.EncapsulatedDocumentLength = len(pdf)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "IMAGING_PORTAL"
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return ReportObject(out.getvalue(), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID))


def pdf_span(fp: IO[bytes]) -> tuple[int, int]:
    """Where the PDF is in the Part 10 object ``fp``: its offset in the file and its
    length (EncapsulatedDocumentLength, without the pad byte), so that it can be streamed
    from storage without reading the object into memory."""
    ds = dcmread(fp, defer_size=256, specific_tags=[ENCAPSULATED_DOCUMENT,
                                                   ENCAPSULATED_DOCUMENT_LENGTH,
                                                   Tag("MIMETypeOfEncapsulatedDocument")])
    if ds.get("MIMETypeOfEncapsulatedDocument", "") != PDF_MIME_TYPE:
        raise NotAReportPdf("not an encapsulated PDF")
    raw = ds.get_item(ENCAPSULATED_DOCUMENT, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.length == UNDEFINED_LENGTH:
        raise NotAReportPdf("no EncapsulatedDocument")
    length = int(ds.get("EncapsulatedDocumentLength") or raw.length)
    if ds.file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian or length > raw.length:
        raise NotAReportPdf("an encapsulated document this portal did not write")
    return raw.value_tell, length
