"""IHE Portable Data for Imaging (PDI) media content: the DICOMDIR and what it indexes.

A CD from a clinic holds the original DICOM files under ISO 9660 names (upper case, at most
eight characters per component), a DICOMDIR in the root that indexes them, a README.TXT and
an INDEX.HTM that opens in a browser (IHE RAD TF-3 4.47.4.1). The download ZIP is that CD.

The DICOMDIR is made by :class:`pydicom.fileset.FileSet` from header-only datasets (read
with ``stop_before_pixels``): pydicom writes those small stand-ins and the DICOMDIR into a
temporary directory, chooses the File IDs (``PT000000/ST000000/SE000000/IM000000``) and we
keep only the DICOMDIR bytes and the File IDs; the original files go into the archive under
the very same names. Pure pydicom: no database, no storage.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.uid import UID

FILESET_ID = "PORTAL"


@dataclass
class SeriesSummary:
    uid: str
    modality: str = ""
    number: str = ""
    description: str = ""
    instances: int = 0
    folder: str = ""


@dataclass
class StudySummary:
    uid: str
    date: str = ""
    description: str = ""
    accession: str = ""
    series: dict[str, SeriesSummary] = field(default_factory=dict)


@dataclass
class PatientSummary:
    patient_id: str
    name: str = ""
    birth_date: str = ""
    studies: dict[str, StudySummary] = field(default_factory=dict)


@dataclass
class Media:
    """The DICOMDIR bytes, each instance's File ID (``/``-separated) and what they hold."""

    dicomdir: bytes
    file_ids: dict[str, str]
    patients: list[PatientSummary]
    # SOP Instance UIDs of objects no DICOMDIR record type fits (kept on the media anyway).
    unindexed: list[str] = field(default_factory=list)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _date(value: str) -> str:
    """A DICOM DA value as ISO 8601, or as given when it is not one."""
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def build_media(headers: Iterable[Dataset], *, fileset_uid: str,
                fileset_id: str = FILESET_ID) -> Media:
    """The DICOMDIR for ``headers`` (header-only datasets with File Meta Information).

    Parameters
    ----------
    headers : iterable of pydicom.dataset.Dataset
        One per instance, in the order the File IDs should follow; each needs
        ``file_meta`` with the Transfer Syntax UID and Media Storage SOP Class/Instance UIDs.
    fileset_uid : str
        The File-set UID; fixed by the caller so the same content gives the same bytes.
    fileset_id : str
        The File-set ID (CS, at most 16 characters).

    Returns
    -------
    Media
        The DICOMDIR bytes, the File ID of each SOP Instance UID and a patient/study/series
        summary for the README and index page.
    """
    fs = FileSet()
    fs.ID = fileset_id
    fs.UID = UID(fileset_uid)
    patients: dict[str, PatientSummary] = {}
    series_of: dict[str, SeriesSummary] = {}
    unindexed: list[str] = []
    for ds in headers:
        try:
            fs.add(ds)
        except ValueError:  # no standard directory record for this SOP class
            unindexed.append(_text(ds, "SOPInstanceUID"))
            continue
        pid = _text(ds, "PatientID")
        patient = patients.setdefault(pid, PatientSummary(
            pid, _text(ds, "PatientName").replace("^", " ").strip(),
            _date(_text(ds, "PatientBirthDate"))))
        study_uid = _text(ds, "StudyInstanceUID")
        study = patient.studies.setdefault(study_uid, StudySummary(
            study_uid, _date(_text(ds, "StudyDate")), _text(ds, "StudyDescription"),
            _text(ds, "AccessionNumber")))
        series_uid = _text(ds, "SeriesInstanceUID")
        series = study.series.setdefault(series_uid, SeriesSummary(
            series_uid, _text(ds, "Modality"), _text(ds, "SeriesNumber"),
            _text(ds, "SeriesDescription")))
        series.instances += 1
        series_of[_text(ds, "SOPInstanceUID")] = series
    with tempfile.TemporaryDirectory(prefix="dicomdir-") as tmp:
        fs.write(tmp)
        dicomdir = (Path(tmp) / "DICOMDIR").read_bytes()
        file_ids = {str(instance.SOPInstanceUID): Path(instance.FileID).as_posix()
                    for instance in fs}
    for uid, file_id in file_ids.items():
        series = series_of[uid]
        folder = file_id.rsplit("/", 1)[0]
        if not series.folder or folder < series.folder:
            series.folder = folder
    return Media(dicomdir, file_ids, list(patients.values()), unindexed)
