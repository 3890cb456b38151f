"""Blobs in S3-compatible object storage, against a real HTTP endpoint (moto's server).

What is true on disk is true in a bucket: the object holds the original bytes, a duplicate
adds nothing, and a transaction that fails takes its freshly uploaded object with it.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pydicom.data
import pytest
from django.conf import settings as django_settings
from django.db import DatabaseError, connection

from imaging.ingest import Outcome, ingest
from imaging.models import Instance
from imaging.synthetic import PatientSpec, SeriesSpec, write_study
from tests.conftest import stored_files
from tests.s3_support import CREDENTIALS, s3_endpoint  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
BUCKET = "dicom-test"


@pytest.fixture
def bucket(s3_endpoint: str, settings: Any, dicom_storage: Path,  # noqa: F811
           ) -> Iterator[Any]:
    """An empty bucket, and the ``dicom`` storage pointed at it as settings.py would."""
    s3 = boto3.resource("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **CREDENTIALS)
    created = s3.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **django_settings.STORAGES,
        "dicom": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "access_key": CREDENTIALS["aws_access_key_id"],
                "secret_key": CREDENTIALS["aws_secret_access_key"],
                "location": "",
                "file_overwrite": False,
                "default_acl": None,
                "querystring_auth": True,
            },
        },
    }
    yield created
    created.objects.all().delete()
    created.delete()


def _keys(bucket: Any) -> list[str]:
    return sorted(obj.key for obj in bucket.objects.all())


def test_a_stored_object_is_in_the_bucket_byte_identical_under_its_opaque_key(
    bucket: Any, dicom_storage: Path
):
    original = (TEST_FILES / "MR_small_RLE.dcm").read_bytes()

    result = ingest(io.BytesIO(original), source="test:s3")

    assert result.outcome == Outcome.STORED
    instance = Instance.objects.get(sop_instance_uid=result.sop_instance_uid)
    assert _keys(bucket) == [instance.blob_key]
    assert result.sop_instance_uid not in instance.blob_key
    body = bucket.Object(instance.blob_key).get()["Body"].read()
    assert body == original
    assert hashlib.sha256(body).hexdigest() == instance.sha256
    assert instance.size_bytes == len(original)
    assert stored_files(dicom_storage) == []  # nothing went to the local folder


def test_a_large_object_goes_up_in_parts_and_comes_back_identical(bucket: Any):
    # One 2100x2100 16-bit slice is past boto3's 8 MB multipart threshold.
    with tempfile.TemporaryDirectory() as folder:
        _, (path,) = write_study(
            Path(folder), PatientSpec("S3-BIG", "Big^Bea", datetime.date(1966, 6, 6), "F"),
            [SeriesSpec("CT", 1, size=2100)], study_date=datetime.date(2026, 1, 1),
            accession="ACC-S3", description="large",
        )
        original = path.read_bytes()
        assert len(original) > 8 * 1024 * 1024
        with open(path, "rb") as fp:
            result = ingest(fp)

    instance = Instance.objects.get(sop_instance_uid=result.sop_instance_uid)
    body = bucket.Object(instance.blob_key).get()["Body"].read()
    assert body == original
    assert instance.sha256 == hashlib.sha256(original).hexdigest()


def test_a_duplicate_or_a_conflict_uploads_nothing(bucket: Any):
    ingest(io.BytesIO((TEST_FILES / "MR_small.dcm").read_bytes()))
    before = _keys(bucket)

    again = ingest(io.BytesIO((TEST_FILES / "MR_small.dcm").read_bytes()))
    other = ingest(io.BytesIO((TEST_FILES / "MR_small_bigendian.dcm").read_bytes()))

    assert (again.outcome, other.outcome) == (Outcome.DUPLICATE, Outcome.CONFLICT)
    assert _keys(bucket) == before
    assert len(before) == 1


def test_a_rejected_object_never_reaches_the_bucket(bucket: Any):
    result = ingest(io.BytesIO((TEST_FILES / "MR_truncated.dcm").read_bytes()))

    assert result.outcome == Outcome.REJECTED
    assert _keys(bucket) == []


@pytest.fixture
def instance_inserts_fail() -> Iterator[None]:
    """A trigger that refuses the instance row, after the blob has been uploaded."""
    if connection.vendor == "postgresql":
        create = [
            "CREATE FUNCTION refuse_instance() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'instance refused by the test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_instance BEFORE INSERT ON imaging_instance "
            "FOR EACH ROW EXECUTE FUNCTION refuse_instance()",
        ]
        drop = [
            "DROP TRIGGER refuse_instance ON imaging_instance",
            "DROP FUNCTION refuse_instance()",
        ]
    else:
        create = [
            "CREATE TRIGGER refuse_instance BEFORE INSERT ON imaging_instance "
            "BEGIN SELECT RAISE(ABORT, 'instance refused by the test'); END"
        ]
        drop = ["DROP TRIGGER refuse_instance"]
    with connection.cursor() as cursor:
        for sql in create:
            cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        for sql in drop:
            cursor.execute(sql)


def test_a_failed_transaction_deletes_the_uploaded_object_from_the_bucket(
    bucket: Any, instance_inserts_fail: None
):
    with pytest.raises(DatabaseError, match="instance refused by the test"):
        ingest(io.BytesIO((TEST_FILES / "CT_small.dcm").read_bytes()))

    assert _keys(bucket) == []
    assert not Instance.objects.exists()
