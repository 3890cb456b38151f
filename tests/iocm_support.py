"""Rejection notes as a modality or PACS sends them, built with pydicom from the files they
reject (independently of the portal's own builder), and the reads that must not show them."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

KOS = UID("1.2.840.10008.5.1.4.1.1.88.59")
QUALITY = ("113001", "Rejected for Quality Reasons")
SAFETY = ("113037", "Rejected for Patient Safety Reasons")


def rejection_note(folder: Path, references: Seq[Path], *, of: Path | None = None,
                   reason: tuple[str, str] = QUALITY, scheme: str = "DCM",
                   extra_uids: Seq[tuple[str, str, str]] = ()) -> Path:
    """A KOS rejection note for ``references`` (files), in the study and for the patient of
    ``of`` (default: the first reference); ``extra_uids``: (study, series, SOP) references
    to objects that are not there."""
    head = dcmread(of or references[0], stop_before_pixels=True)
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                    "ReferringPhysicianName", "StudyID"):
        setattr(ds, keyword, head.get(keyword, ""))
    ds.SOPClassUID = KOS
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "KO"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20260401", "120000"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.ValueType = "CONTAINER"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = (
        reason[0], scheme, reason[1])
    ds.ConceptNameCodeSequence = Sequence([title])
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = Sequence([template])
    ds.ContinuityOfContent = "SEPARATE"
    studies: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for path in references:
        header = dcmread(path, stop_before_pixels=True)
        studies.setdefault(header.StudyInstanceUID, {}).setdefault(
            header.SeriesInstanceUID, []).append((header.SOPClassUID, header.SOPInstanceUID))
    for study, series, sop in extra_uids:
        studies.setdefault(study, {}).setdefault(series, []).append(
            ("1.2.840.10008.5.1.4.1.1.2", sop))
    evidence = []
    content = []
    for study, by_series in studies.items():
        item = Dataset()
        item.StudyInstanceUID = study
        series_items = []
        for series, sops in by_series.items():
            one = Dataset()
            one.SeriesInstanceUID = series
            refs = []
            for sop_class, sop in sops:
                ref = Dataset()
                ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop
                refs.append(ref)
                entry = Dataset()
                entry.RelationshipType, entry.ValueType = "CONTAINS", "IMAGE"
                entry.ReferencedSOPSequence = Sequence([ref])
                content.append(entry)
            one.ReferencedSOPSequence = Sequence(refs)
            series_items.append(one)
        item.ReferencedSeriesSequence = Sequence(series_items)
        evidence.append(item)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence(evidence)
    ds.ContentSequence = Sequence(content)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = KOS
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"kos-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def series_of(paths: Seq[Path]) -> dict[str, list[Path]]:
    """Files by Series Instance UID, in the order given."""
    out: dict[str, list[Path]] = {}
    for path in paths:
        out.setdefault(str(dcmread(path, stop_before_pixels=True).SeriesInstanceUID),
                       []).append(path)
    return out
