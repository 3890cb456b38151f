"""The same object twice, a different object under a known UID, and patients that disagree.

Storing is idempotent: the same object again (the same dataset in the same transfer syntax,
whatever File Meta each copy has) is a duplicate, a different object under the same SOP
Instance UID is a conflict and the original stays. Study and series counters count
each stored object exactly once. A patient whose name or birth date differs between objects
is flagged for review, never merged.
"""

from __future__ import annotations

import datetime
import hashlib
import io
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from imaging import blobs
from imaging.ingest import IngestResult, Outcome, ingest
from imaging.models import Instance, Patient, PatientConflict, Series, Study
from imaging.synthetic import PatientSpec, SeriesSpec, series_datasets
from tests.conftest import PAULA, stored_files

pytestmark = pytest.mark.django_db

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _ingest_path(path: Path) -> IngestResult:
    with open(path, "rb") as fp:
        return ingest(fp, source="test:duplicates")


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _study_of(
    patient: PatientSpec, study_uid: str, modality: str = "CT", slices: int = 2
) -> list[bytes]:
    return [
        _bytes(ds)
        for ds in series_datasets(
            patient, SeriesSpec(modality, slices, size=16), study_uid=study_uid,
            study_date=datetime.date(2026, 2, 3), accession="ACC-DUP",
            study_description="duplicates", series_number=1,
        )
    ]


def test_the_same_file_twice_is_stored_once_and_then_reported_as_duplicate(
    dicom_storage: Path,
):
    path = TEST_FILES / "CT_small.dcm"

    first = _ingest_path(path)
    second = _ingest_path(path)

    assert first.outcome == Outcome.STORED
    assert second.outcome == Outcome.DUPLICATE
    assert second.accepted
    assert second.reason == "already stored with the same content"
    assert second.instance_id == first.instance_id
    assert second.sop_instance_uid == first.sop_instance_uid
    assert Instance.objects.count() == 1
    assert len(stored_files(dicom_storage)) == 1
    study = Study.objects.get()
    assert study.num_instances == 1
    assert study.size_bytes == path.stat().st_size
    assert Series.objects.get().num_instances == 1


def test_different_bytes_under_a_stored_uid_are_a_conflict_and_the_original_is_kept(
    dicom_storage: Path,
):
    original = TEST_FILES / "MR_small.dcm"
    other = TEST_FILES / "MR_small_implicit.dcm"  # same SOP Instance UID, other encoding
    stored = _ingest_path(original)

    result = _ingest_path(other)

    assert result.outcome == Outcome.CONFLICT
    assert not result.accepted
    assert "already stored with different content" in result.reason
    assert "the stored original is kept" in result.reason
    assert result.instance_id == stored.instance_id
    instance = Instance.objects.get()
    assert instance.sha256 == hashlib.sha256(original.read_bytes()).hexdigest()
    assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    with blobs.open_blob(instance.blob_key) as blob:
        assert blob.read() == original.read_bytes()
    assert len(stored_files(dicom_storage)) == 1
    assert Study.objects.get().num_instances == 1


def _with_other_file_meta(path: Path) -> bytes:
    """The same dataset behind the File Meta another implementation would write."""
    ds = dcmread(path)
    ds.file_meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.9.3811.3.0.4")
    ds.file_meta.ImplementationVersionName = "PYNETDICOM_304"
    ds.file_meta.SourceApplicationEntityTitle = "MODALITY"
    return _bytes(ds)


def test_the_same_dataset_behind_another_file_meta_is_a_duplicate(dicom_storage: Path):
    """One object that came by two ways in (STOW-RS keeps the sender's File Meta, the
    listener's is pynetdicom's) is the same object."""
    original = TEST_FILES / "MR_small.dcm"
    again = _with_other_file_meta(original)
    assert again != original.read_bytes()
    stored = _ingest_path(original)

    result = ingest(io.BytesIO(again), source="test:duplicates")

    assert result.outcome == Outcome.DUPLICATE
    assert result.instance_id == stored.instance_id
    assert len(stored_files(dicom_storage)) == 1


def test_another_dataset_behind_the_same_file_meta_is_still_a_conflict(dicom_storage: Path):
    original = TEST_FILES / "MR_small.dcm"
    _ingest_path(original)
    ds = dcmread(original)
    ds.SeriesDescription = "changed"

    result = ingest(io.BytesIO(_bytes(ds)), source="test:duplicates")

    assert result.outcome == Outcome.CONFLICT
    assert len(stored_files(dicom_storage)) == 1


def test_a_conflict_is_reported_again_however_often_it_is_sent(dicom_storage: Path):
    _ingest_path(TEST_FILES / "MR_small.dcm")

    outcomes = [_ingest_path(TEST_FILES / "MR_small_RLE.dcm").outcome for _ in range(3)]

    assert outcomes == [Outcome.CONFLICT] * 3
    assert Instance.objects.count() == 1
    assert len(stored_files(dicom_storage)) == 1


def test_study_and_series_counters_count_each_stored_object_once(
    ct_study: tuple[str, list[Path]],
):
    study_uid, paths = ct_study
    for path in paths + paths[:3]:
        _ingest_path(path)

    study = Study.objects.get(study_instance_uid=study_uid)
    assert study.num_series == 2
    assert study.num_instances == 12
    assert study.size_bytes == sum(p.stat().st_size for p in paths)
    assert study.modalities == "CT"
    for series in Series.objects.filter(study=study):
        files = [p for p in paths if dcmread(p).SeriesInstanceUID == series.series_instance_uid]
        assert series.num_instances == len(files) == 6
        assert series.size_bytes == sum(p.stat().st_size for p in files)
    assert Instance.objects.count() == 12
    assert Patient.objects.count() == 1


def test_a_study_lists_each_modality_of_its_series_once_in_order():
    study_uid = "1.2.826.0.1.3680043.10.1455.88.1"
    for data in _study_of(PAULA, study_uid, "MR") + _study_of(PAULA, study_uid, "CT"):
        assert ingest(io.BytesIO(data)).outcome == Outcome.STORED

    study = Study.objects.get(study_instance_uid=study_uid)
    assert study.modalities == "CT\\MR"
    assert study.num_series == 2
    assert study.num_instances == 4


def test_a_different_name_for_a_known_patient_id_is_stored_but_flagged():
    renamed = PatientSpec(PAULA.patient_id, "Pereira^Paulina", PAULA.birth_date, PAULA.sex)
    for data in _study_of(PAULA, "1.2.826.0.1.3680043.10.1455.88.2"):
        ingest(io.BytesIO(data))

    later = [ingest(io.BytesIO(d)) for d in _study_of(renamed, "1.2.826.0.1.3680043.10.1455.88.3")]

    assert [r.outcome for r in later] == [Outcome.STORED, Outcome.STORED]
    patient = Patient.objects.get()
    assert patient.name == "Pereira^Paula"
    assert Study.objects.filter(patient=patient).count() == 2
    conflicts = PatientConflict.objects.filter(patient=patient)
    assert conflicts.count() == 2
    assert {c.instance.sop_instance_uid for c in conflicts} == {r.sop_instance_uid for r in later}
    for conflict in conflicts:
        assert conflict.status == PatientConflict.Status.OPEN
        assert conflict.differences == {
            "PatientName": {"stored": "Pereira^Paula", "received": "Pereira^Paulina"}
        }


def test_a_different_birth_date_for_a_known_patient_id_is_stored_but_flagged():
    older = PatientSpec(PAULA.patient_id, PAULA.name, datetime.date(1957, 4, 12), PAULA.sex)
    ingest(io.BytesIO(_study_of(PAULA, "1.2.826.0.1.3680043.10.1455.88.4", slices=1)[0]))

    result = ingest(io.BytesIO(_study_of(older, "1.2.826.0.1.3680043.10.1455.88.5", slices=1)[0]))

    assert result.outcome == Outcome.STORED
    conflict = PatientConflict.objects.get()
    assert conflict.differences == {
        "PatientBirthDate": {"stored": "1975-04-12", "received": "1957-04-12"}
    }
    assert Patient.objects.get().birth_date == datetime.date(1975, 4, 12)


def test_the_same_name_written_differently_is_not_a_conflict():
    shouted = PatientSpec(PAULA.patient_id, "PEREIRA^PAULA^^", PAULA.birth_date, PAULA.sex)
    ingest(io.BytesIO(_study_of(PAULA, "1.2.826.0.1.3680043.10.1455.88.6", slices=1)[0]))

    ingest(io.BytesIO(_study_of(shouted, "1.2.826.0.1.3680043.10.1455.88.7", slices=1)[0]))

    assert Patient.objects.count() == 1
    assert not PatientConflict.objects.exists()


def test_a_different_patient_id_inside_a_known_study_is_flagged_not_moved():
    study_uid = "1.2.826.0.1.3680043.10.1455.88.8"
    stranger = PatientSpec("OTHER-9", "Outro^Oscar", datetime.date(1990, 1, 1), "M")
    ingest(io.BytesIO(_study_of(PAULA, study_uid, slices=1)[0]))

    ds = dcmread(io.BytesIO(_study_of(stranger, study_uid, slices=1)[0]))
    ds.SeriesInstanceUID = Series.objects.get().series_instance_uid
    result = ingest(io.BytesIO(_bytes(ds)))

    assert result.outcome == Outcome.STORED
    assert Study.objects.get().patient.patient_id == PAULA.patient_id
    assert set(PatientConflict.objects.get().differences) == {
        "PatientID", "PatientName", "PatientBirthDate"
    }


def test_objects_without_a_patient_id_each_get_a_patient_of_their_own():
    anonymous = PatientSpec("", "", datetime.date(2000, 1, 1), "O")
    ingest(io.BytesIO(_study_of(anonymous, "1.2.826.0.1.3680043.10.1455.88.9", slices=1)[0]))
    ingest(io.BytesIO(_study_of(anonymous, "1.2.826.0.1.3680043.10.1455.88.10", slices=1)[0]))

    assert Patient.objects.filter(patient_id="").count() == 2
    assert not PatientConflict.objects.exists()
