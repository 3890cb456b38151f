"""Transparent recall: a read of an object evicted from (or lost by) the local tier gets it
from its verified replica copy, streamed as it arrives, and leaves it local again, but only
if it hashes to the instance's SHA-256. Against moto's real S3 server and real files.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
from pathlib import Path

import pytest
from django.db import connection

from imaging import blobs
from imaging.ingest import ingest
from imaging.models import Instance
from imaging.synthetic import SeriesSpec, write_study
from replica.models import Copy
from replica.recall import RecallFailed
from tests import replica_support
from tests.conftest import PAULA, stored_files
from tests.replica_support import evict_all, spills, store_replicated
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture

replica = replica_support.replica


@pytest.fixture(scope="module")
def large_slice(tmp_path_factory) -> Path:
    """One CT slice of 1024x1024 (2 MiB): larger than a chunk of the download."""
    _, [path] = write_study(tmp_path_factory.mktemp("large"), PAULA,
                            [SeriesSpec("CT", 1, size=1024)], study_date=datetime.date(2026, 1, 5),
                            accession="ACC-LARGE", description="CT grande")
    return path


def _local(instance: Instance) -> Copy:
    return Copy.objects.get(instance=instance, tier=Copy.Tier.LOCAL)


def _local_path(dicom_storage: Path, instance: Instance) -> Path:
    return dicom_storage / instance.blob_key


@pytest.mark.django_db
def test_reading_an_evicted_object_gives_its_bytes_and_makes_it_local_again(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks
):
    path = ct_study[1][0]
    [instance] = store_replicated([path], django_capture_on_commit_callbacks)
    evict_all([instance])
    assert not _local_path(dicom_storage, instance).exists()
    assert _local(instance).state == Copy.State.EVICTED

    with blobs.open_blob(instance.blob_key) as fp:
        assert fp.read() == path.read_bytes()

    assert _local_path(dicom_storage, instance).read_bytes() == path.read_bytes()
    local = _local(instance)
    assert local.state == Copy.State.WRITTEN and local.written_at is not None
    assert spills(dicom_storage) == []
    # The next read is a plain local read.
    assert b"".join(blobs.iter_chunks(instance.blob_key)) == path.read_bytes()


@pytest.mark.django_db
def test_the_reader_gets_the_first_bytes_before_the_whole_object_has_arrived(
    replica, large_slice, dicom_storage, django_capture_on_commit_callbacks
):
    [instance] = store_replicated([large_slice], django_capture_on_commit_callbacks)
    evict_all([instance])
    original = large_slice.read_bytes()

    with blobs.open_blob(instance.blob_key) as fp:
        assert fp.read(132) == original[:132]  # the preamble and "DICM"
        [spill] = spills(dicom_storage)
        assert spill.stat().st_size < len(original)  # only what has arrived so far
        assert not _local_path(dicom_storage, instance).exists()
        # Seeking ahead and back, as pydicom and the frame readers do.
        fp.seek(len(original) - 10)
        assert fp.read() == original[-10:]
        fp.seek(1000)
        assert fp.read(500) == original[1000:1500]
    assert _local_path(dicom_storage, instance).read_bytes() == original
    assert spills(dicom_storage) == []


@pytest.mark.django_db
def test_a_reader_that_stops_early_still_leaves_the_object_local(
    replica, large_slice, dicom_storage, django_capture_on_commit_callbacks
):
    [instance] = store_replicated([large_slice], django_capture_on_commit_callbacks)
    evict_all([instance])
    with blobs.open_blob(instance.blob_key) as fp:
        fp.read(10)
    assert hashlib.sha256(_local_path(dicom_storage, instance).read_bytes()).hexdigest() == (
        instance.sha256)


@pytest.mark.django_db
def test_a_lost_local_file_is_recalled_as_an_evicted_one_is(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks
):
    path = ct_study[1][1]
    [instance] = store_replicated([path], django_capture_on_commit_callbacks)
    _local_path(dicom_storage, instance).unlink()  # a disk lost, no eviction
    with blobs.open_blob(instance.blob_key) as fp:
        assert fp.read() == path.read_bytes()
    assert _local_path(dicom_storage, instance).read_bytes() == path.read_bytes()


@pytest.mark.django_db
def test_a_replica_object_of_other_bytes_is_refused_logged_and_not_kept(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks, caplog
):
    """A valid replica object that is not this instance's (its row swapped for another
    one's): every segment authenticates, only its length or its hash tells (the two
    instances' headers may differ in length), and the read fails."""
    first, second = store_replicated(ct_study[1][2:4], django_capture_on_commit_callbacks)
    evict_all([first])
    other = Copy.objects.get(instance=second, tier=Copy.Tier.REPLICA)
    Copy.objects.filter(instance=first, tier=Copy.Tier.REPLICA).update(
        key=other.key, wrapped_key=other.wrapped_key, nonce_prefix=other.nonce_prefix)

    with caplog.at_level(logging.ERROR, logger="replica.recall"):
        fp = blobs.open_blob(first.blob_key)
        with pytest.raises(RecallFailed, match=r"SHA-256|longer than"):
            fp.read()
        fp.close()
    assert any(r.levelno == logging.ERROR and "not kept" in r.getMessage()
               for r in caplog.records)
    assert not _local_path(dicom_storage, first).exists()
    assert spills(dicom_storage) == []
    assert _local(first).state == Copy.State.EVICTED


@pytest.mark.django_db
def test_an_altered_replica_object_fails_the_read_cleanly(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks
):
    [instance] = store_replicated([ct_study[1][4]], django_capture_on_commit_callbacks)
    evict_all([instance])
    copy = Copy.objects.get(instance=instance, tier=Copy.Tier.REPLICA)
    obj = replica.Object(copy.key)
    got = obj.get()
    body = bytearray(got["Body"].read())
    body[100] ^= 1
    obj.put(Body=bytes(body), Metadata=got["Metadata"])

    with pytest.raises(RecallFailed), blobs.open_blob(instance.blob_key) as fp:
        fp.read()
    assert not _local_path(dicom_storage, instance).exists()
    assert spills(dicom_storage) == []


@pytest.mark.django_db
def test_a_missing_object_without_a_verified_replica_copy_is_still_not_found(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks
):
    [instance] = store_replicated([ct_study[1][5]], django_capture_on_commit_callbacks)
    Copy.objects.filter(instance=instance, tier=Copy.Tier.REPLICA).update(
        state=Copy.State.FAILED)
    _local_path(dicom_storage, instance).unlink()
    with pytest.raises(FileNotFoundError):
        blobs.open_blob(instance.blob_key)


@pytest.mark.django_db
def test_without_a_replica_a_missing_object_is_not_found_and_nothing_is_asked(
    settings, ct_study, dicom_storage, django_assert_num_queries
):
    settings.REPLICA_URL = ""
    with ct_study[1][0].open("rb") as fp:
        result = ingest(fp, source="test")
    assert result.instance_id is not None
    instance = Instance.objects.get(pk=result.instance_id)
    _local_path(dicom_storage, instance).unlink()
    with django_assert_num_queries(0), pytest.raises(FileNotFoundError):
        blobs.open_blob(instance.blob_key)


@pytest.mark.django_db(transaction=True)
def test_two_readers_of_one_evicted_object_both_get_its_bytes_and_leave_one_file(
    replica, large_slice, dicom_storage, django_capture_on_commit_callbacks
):
    [instance] = store_replicated([large_slice], django_capture_on_commit_callbacks)
    evict_all([instance])
    original = large_slice.read_bytes()
    start = threading.Barrier(2)
    got: list[bytes] = []

    def read() -> None:
        try:
            start.wait()
            with blobs.open_blob(instance.blob_key) as fp:
                got.append(fp.read())
        finally:
            connection.close()

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [original, original]
    assert [p.name for p in stored_files(dicom_storage)] == [Path(instance.blob_key).name]
    assert _local_path(dicom_storage, instance).read_bytes() == original
    assert _local(instance).state == Copy.State.WRITTEN
