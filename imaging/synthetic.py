"""Synthetic but realistic CT and MR series, for demo data, benchmarks and tests.

Pure pydicom and NumPy. The pixel data is a simple phantom (body ellipse, organs, noise) so
pages and viewers show something recognisable; the headers carry what real modalities send.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

ROOT = "1.2.826.0.1.3680043.10.1455."  # under pydicom's UID root, marked as synthetic


@dataclass(frozen=True)
class PatientSpec:
    patient_id: str
    name: str
    birth_date: datetime.date
    sex: str


@dataclass(frozen=True)
class SeriesSpec:
    modality: str  # "CT" or "MR"
    slices: int
    size: int = 512
    description: str = ""
    body_part: str = "CHEST"


def phantom(size: int, index: int, slices: int, modality: str, seed: int = 0) -> np.ndarray:
    """One slice of a body phantom, int16 in Hounsfield-like units for CT."""
    rng = np.random.default_rng(seed + index)
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    z = (index / max(slices - 1, 1)) * 2 - 1
    image = np.full((size, size), -1000 if modality == "CT" else 0, dtype=np.float32)
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1 - 0.3 * z * z
    image[body] = 40 if modality == "CT" else 400
    for cx in (-0.35, 0.35):  # lungs or kidneys
        organ = ((x - cx) / 0.25) ** 2 + (y / 0.4) ** 2 <= 1 - z * z
        image[organ & body] = -800 if modality == "CT" else 900
    spine = (x / 0.08) ** 2 + ((y - 0.45) / 0.08) ** 2 <= 1
    image[spine & body] = 700 if modality == "CT" else 150
    image += rng.normal(0, 12, image.shape).astype(np.float32)
    return image.astype(np.int16)


def series_datasets(
    patient: PatientSpec,
    spec: SeriesSpec,
    *,
    study_uid: str,
    study_date: datetime.date,
    accession: str,
    study_description: str,
    series_number: int,
    seed: int = 0,
) -> Iterator[Dataset]:
    """The Part 10 datasets of one series, one slice at a time (never the whole series)."""
    series_uid = generate_uid(ROOT)
    frame_of_reference = generate_uid(ROOT)
    sop_class = CTImageStorage if spec.modality == "CT" else MRImageStorage
    date = study_date.strftime("%Y%m%d")
    for index in range(spec.slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        sop_uid = generate_uid(ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
        ds.AccessionNumber = accession
        ds.Modality = spec.modality
        ds.Manufacturer = "Synthetic"
        ds.InstitutionName = "Clínica Demonstração"
        ds.ReferringPhysicianName = "Souza^Marina^^Dra."
        ds.StudyDescription = study_description
        ds.SeriesDescription = spec.description or f"{spec.modality} {spec.body_part.lower()}"
        ds.PatientName = patient.name
        ds.PatientID = patient.patient_id
        ds.IssuerOfPatientID = "DEMO"
        ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
        ds.PatientSex = patient.sex
        ds.BodyPartExamined = spec.body_part
        ds.SliceThickness = "2.5"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = accession[-8:]
        ds.SeriesNumber = series_number
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [-250.0, -250.0, round(-index * 2.5, 2)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame_of_reference
        ds.SliceLocation = round(-index * 2.5, 2)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = spec.size
        ds.PixelSpacing = [round(500 / spec.size, 4)] * 2
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        if spec.modality == "CT":
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
            ds.KVP = "120"
        else:
            ds.WindowCenter = "500"
            ds.WindowWidth = "1000"
            ds.MagneticFieldStrength = "1.5"
            ds.RepetitionTime = "500"
            ds.EchoTime = "15"
        ds.PixelData = phantom(spec.size, index, spec.slices, spec.modality, seed).tobytes()
        yield ds


def write_study(
    folder: Path,
    patient: PatientSpec,
    series: list[SeriesSpec],
    *,
    study_date: datetime.date,
    accession: str,
    description: str,
    seed: int = 0,
) -> tuple[str, list[Path]]:
    """Write one study as Part 10 files under ``folder``; returns its UID and the paths."""
    study_uid = generate_uid(ROOT)
    paths: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)
    for number, spec in enumerate(series, start=1):
        for ds in series_datasets(
            patient, spec, study_uid=study_uid, study_date=study_date, accession=accession,
            study_description=description, series_number=number, seed=seed,
        ):
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return study_uid, paths
