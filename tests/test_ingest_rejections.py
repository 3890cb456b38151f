"""What the archive refuses, why, and that a refusal or a failure leaves nothing behind.

A refused object gets a reason a sender can act on. Whether it is refused before anything
is written or the database fails half way through indexing it, afterwards there is no blob
in the storage and no row in the index.
"""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest
from django.db import DatabaseError, connection
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from imaging.ingest import Outcome, ingest
from imaging.models import Instance, Patient, PatientConflict, Series, Study
from imaging.synthetic import PatientSpec, SeriesSpec, series_datasets
from tests.conftest import stored_files

pytestmark = pytest.mark.django_db

PATIENT = PatientSpec("REJ-001", "Rocha^Rita", datetime.date(1980, 1, 2), "F")


def _dataset(study_uid: str = "1.2.826.0.1.3680043.10.1455.77.1") -> Dataset:
    return next(
        series_datasets(
            PATIENT, SeriesSpec("CT", 1, size=32), study_uid=study_uid,
            study_date=datetime.date(2026, 1, 5), accession="ACC-REJ",
            study_description="rejections", series_number=1,
        )
    )


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _bare(ds: Dataset) -> bytes:
    """The dataset alone, as a C-STORE body arrives: no preamble, no File Meta."""
    del ds.file_meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    data = buffer.getvalue()
    assert data[128:132] != b"DICM" and data[:4] == b"\x08\x00\x05\x00"
    return data


def _ingest_bytes(data: bytes) -> tuple[Outcome, str]:
    result = ingest(io.BytesIO(data), source="test:rejections")
    return result.outcome, result.reason


def _nothing_left(location: Path) -> bool:
    return (
        stored_files(location) == []
        and not Instance.objects.exists()
        and not Series.objects.exists()
        and not Study.objects.exists()
        and not Patient.objects.exists()
        and not PatientConflict.objects.exists()
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is a text file\n" * 20,
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        b"PK\x03\x04" + b"\x00" * 300,
        b"\x00" * 128 + b"DICM" + b"\xff" * 64,
    ],
    ids=["empty", "text", "png", "zip-header", "preamble-then-garbage"],
)
def test_bytes_that_are_not_dicom_are_rejected_as_not_dicom(data: bytes, dicom_storage: Path):
    outcome, reason = _ingest_bytes(data)

    assert outcome == Outcome.REJECTED
    assert "not a DICOM file" in reason or "truncated" in reason
    assert _nothing_left(dicom_storage)


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_a_part10_file_missing_a_required_uid_is_rejected_naming_it(
    keyword: str, dicom_storage: Path
):
    ds = _dataset()
    delattr(ds, keyword)

    outcome, reason = _ingest_bytes(_part10(ds))

    assert outcome == Outcome.REJECTED
    assert reason == f"{keyword} is missing"
    assert _nothing_left(dicom_storage)


@pytest.mark.parametrize(
    "keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"]
)
def test_a_bare_dataset_missing_a_required_uid_is_rejected_naming_it(
    keyword: str, dicom_storage: Path
):
    ds = _dataset()
    delattr(ds, keyword)

    outcome, reason = _ingest_bytes(_bare(ds))

    assert outcome == Outcome.REJECTED
    assert reason == f"{keyword} is missing"
    assert _nothing_left(dicom_storage)


def test_a_bare_dataset_with_its_uids_is_stored_without_file_meta(dicom_storage: Path):
    data = _bare(_dataset())

    result = ingest(io.BytesIO(data))

    assert result.outcome == Outcome.STORED
    instance = Instance.objects.get(sop_instance_uid=result.sop_instance_uid)
    assert not instance.has_file_meta
    assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert len(stored_files(dicom_storage)) == 1


def test_a_uid_that_is_not_a_valid_uid_is_rejected(dicom_storage: Path):
    ds = _dataset()
    ds.SeriesInstanceUID = "1.2.3.abc"

    outcome, reason = _ingest_bytes(_part10(ds))

    assert outcome == Outcome.REJECTED
    assert reason == "SeriesInstanceUID is not a valid UID: '1.2.3.abc'"
    assert _nothing_left(dicom_storage)


def test_pixel_data_shorter_than_rows_times_columns_is_rejected(dicom_storage: Path):
    ds = _dataset()
    ds.PixelData = ds.PixelData[: 32 * 32 * 2 - 64]

    outcome, reason = _ingest_bytes(_part10(ds))

    assert outcome == Outcome.REJECTED
    assert reason.startswith("pixel data is 1984 bytes but Rows x Columns")
    assert reason.endswith("needs 2048")
    assert _nothing_left(dicom_storage)


@pytest.mark.parametrize("missing", [1, 100, 2047])
def test_a_file_cut_off_inside_its_pixel_data_is_rejected_as_truncated(
    missing: int, dicom_storage: Path
):
    data = _part10(_dataset())

    outcome, reason = _ingest_bytes(data[:-missing])

    assert outcome == Outcome.REJECTED
    assert reason.startswith("file is truncated: element (7FE0,0010) needs 2048 bytes")
    assert _nothing_left(dicom_storage)


def test_a_file_cut_off_before_its_pixel_data_is_rejected(dicom_storage: Path):
    data = _part10(_dataset())
    header = data[: data.rindex(b"\xe0\x7f\x10\x00")]

    outcome, reason = _ingest_bytes(header)

    assert outcome == Outcome.REJECTED
    assert reason == "pixel data is missing although Rows and Columns are given"
    assert _nothing_left(dicom_storage)


def test_a_series_uid_already_used_in_another_study_is_rejected_and_its_blob_removed(
    dicom_storage: Path,
):
    first = _dataset("1.2.826.0.1.3680043.10.1455.77.1")
    assert ingest(io.BytesIO(_part10(first))).outcome == Outcome.STORED
    second = _dataset("1.2.826.0.1.3680043.10.1455.77.2")
    second.SeriesInstanceUID = first.SeriesInstanceUID

    outcome, reason = _ingest_bytes(_part10(second))

    assert outcome == Outcome.REJECTED
    assert reason == (
        f"SeriesInstanceUID {first.SeriesInstanceUID} already belongs to another study"
    )
    assert len(stored_files(dicom_storage)) == 1
    assert Instance.objects.count() == 1
    assert Study.objects.count() == 1


@pytest.fixture
def study_updates_fail():
    """A database trigger that makes the last statement of indexing (the study counters)
    fail, after the instance row has been inserted: the transaction must roll back and the
    blob already written must go."""
    if connection.vendor == "postgresql":
        statements = [
            "CREATE FUNCTION refuse_study_update() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'study updates refused by the test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_study_update BEFORE UPDATE ON imaging_study "
            "FOR EACH ROW EXECUTE FUNCTION refuse_study_update()",
        ]
    else:
        statements = [
            "CREATE TRIGGER refuse_study_update BEFORE UPDATE ON imaging_study "
            "BEGIN SELECT RAISE(ABORT, 'study updates refused by the test'); END",
        ]
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER refuse_study_update ON imaging_study"
            if connection.vendor == "postgresql"
            else "DROP TRIGGER refuse_study_update"
        )
        if connection.vendor == "postgresql":
            cursor.execute("DROP FUNCTION refuse_study_update()")


def test_a_database_failure_mid_transaction_leaves_no_blob_and_no_row(
    study_updates_fail, dicom_storage: Path
):
    with pytest.raises(DatabaseError, match="study updates refused by the test"):
        ingest(io.BytesIO(_part10(_dataset())))

    assert _nothing_left(dicom_storage)

