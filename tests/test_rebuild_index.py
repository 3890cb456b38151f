"""When the database is lost and no backup can be restored, ``manage.py rebuild_index``
rebuilds patients, studies, series and instances from the DICOM objects themselves: the
local files, or the encrypted replica (a real S3 endpoint: moto's server mode), each read
through the one ingest path.

Every instance comes back with the SHA-256 it was stored with; an object that cannot be
read is named with the reason and costs nothing else; running it again adds nothing.
From the replica the objects are written back to the local tier and their replica copies
recorded as verified, so replication does not upload them again.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditAction, AuditEvent
from imaging import blobs
from imaging.ingest import Outcome, ingest
from imaging.models import Instance, Patient, Series, Study
from replica import copies
from replica.crypto import Envelope
from replica.models import Copy
from tests import replica_support
from tests.conftest import stored_files
from tests.replica_support import KEYS
from tests.s3_support import (  # noqa: F401 - s3_endpoint is a fixture
    CREDENTIALS,
    REGION,
    free_port,
    s3_endpoint,
)


def _snapshot() -> dict[str, dict[str, Any]]:
    """What the index says of each instance, by SOP Instance UID: everything a rebuild
    must give back (not the row ids, which are new)."""
    found = {}
    for i in Instance.objects.select_related("series__study__patient"):
        series, study = i.series, i.series.study
        patient = study.patient
        found[i.sop_instance_uid] = {
            "sha256": i.sha256, "size": i.size_bytes, "sop_class": i.sop_class_uid,
            "syntax": i.transfer_syntax_uid, "metadata": i.metadata,
            "series": (series.series_instance_uid, series.modality, series.num_instances,
                       series.size_bytes, series.body_part),
            "study": (study.study_instance_uid, study.accession_number, study.description,
                      study.study_date, study.num_series, study.num_instances,
                      study.size_bytes, study.modalities),
            "patient": (patient.patient_id, patient.issuer, patient.name, patient.birth_date,
                        patient.sex),
        }
    return found


def _lose_the_database() -> None:
    """Every row of the archive's index gone (the audit trail is append-only and stays)."""
    Copy.objects.all().delete()
    Instance.objects.all().delete()
    Series.objects.all().delete()
    Study.objects.all().delete()
    Patient.objects.all().delete()
    assert not Instance.objects.exists() and not Patient.objects.exists()


def _rebuild(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("rebuild_index", *args, "--no-progress", stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


# The commands speak the portal's language (pt-BR by default); these tests read English.
pytestmark = pytest.mark.usefixtures("in_english")


@pytest.fixture
def archive(db, ct_study, other_study) -> dict[str, dict[str, Any]]:
    """paula's CT study and charlie's MR study stored through ingest; the index as it
    was."""
    for path in [*ct_study[1], *other_study[1]]:
        with path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    return _snapshot()


# --- from the local tier ------------------------------------------------------------------


def test_a_lost_index_is_rebuilt_from_the_local_files_with_the_same_checksums_and_fields(
    archive, dicom_storage
):
    files = {p: p.read_bytes() for p in stored_files(dicom_storage)}
    _lose_the_database()

    code, out, err = _rebuild("--from", "local")

    assert code == 0, err
    assert _snapshot() == archive
    assert len(archive) == 16
    # Indexed where they are: no file copied, moved or changed.
    assert {p: p.read_bytes() for p in stored_files(dicom_storage)} == files
    assert set(Instance.objects.values_list("blob_key", flat=True)) == {
        str(p.relative_to(dicom_storage)) for p in files}
    for instance in Instance.objects.all():
        assert hashlib.sha256(files[dicom_storage / instance.blob_key]).hexdigest() == \
            instance.sha256
    assert "2 patients" in out and "2 studies" in out and "3 series" in out
    assert f"16 instances ({sum(len(b) for b in files.values())} bytes)" in out
    assert "user accounts" in out and "audit trail" in out and "consents" in out
    stores = AuditEvent.objects.filter(action=AuditAction.STORE, username="rebuild_index")
    assert {e.study_uid for e in stores} == {v["study"][0] for v in archive.values()}


def test_rebuilding_twice_adds_nothing(archive):
    _lose_the_database()
    assert _rebuild("--from", "local")[0] == 0
    counts = (Patient.objects.count(), Study.objects.count(), Series.objects.count(),
              Instance.objects.count(), AuditEvent.objects.count())

    code, out, _ = _rebuild("--from", "local")

    assert code == 0
    assert "0 instances" in out and "16 already indexed" in out
    assert (Patient.objects.count(), Study.objects.count(), Series.objects.count(),
            Instance.objects.count(), AuditEvent.objects.count()) == counts
    assert _snapshot() == archive


def test_an_unreadable_object_is_named_with_its_reason_kept_and_the_rest_recovered(
    archive, dicom_storage, ct_study
):
    junk = dicom_storage / "fff" / "junk.dcm"
    junk.parent.mkdir(exist_ok=True)
    junk.write_bytes(b"not a DICOM object at all" * 10)
    cut = dicom_storage / "fff" / "cut.dcm"
    cut.write_bytes(ct_study[1][0].read_bytes()[:300])
    _lose_the_database()

    code, out, err = _rebuild("--from", "local")

    assert code == 1
    assert _snapshot() == archive
    assert "fff/junk.dcm: rejected:" in err and "fff/cut.dcm: rejected:" in err
    assert "2 not recovered" in out
    assert junk.exists() and cut.exists()  # never deleted: reconcile lists them as orphans


def test_a_second_file_of_an_indexed_object_is_not_indexed_twice(archive, dicom_storage):
    original = Instance.objects.order_by("pk").first()
    assert original is not None
    copy = dicom_storage / "ffe" / "again.dcm"
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes((dicom_storage / original.blob_key).read_bytes())
    _lose_the_database()

    code, out, _ = _rebuild("--from", "local")

    assert code == 0
    assert Instance.objects.count() == 16
    assert "1 copies of objects indexed under another key" in out
    assert copy.exists()


def test_a_dry_run_says_what_it_would_recover_and_writes_nothing(archive):
    _lose_the_database()
    events = AuditEvent.objects.count()

    code, out, _ = _rebuild("--from", "local", "--dry-run")

    assert code == 0
    assert "Dry run" in out and "16 instances" in out and "2 patients" in out
    assert not Instance.objects.exists() and not Patient.objects.exists()
    assert AuditEvent.objects.count() == events


# --- from the replica ---------------------------------------------------------------------


replica = replica_support.replica


@pytest.fixture
def replicated(db, replica, ct_study, other_study, django_capture_on_commit_callbacks
               ) -> dict[str, Any]:
    """Both studies stored and replicated (each copy verified); the index and the replica
    copies (by SOP Instance UID) as they were."""
    for path in [*ct_study[1], *other_study[1]]:
        with django_capture_on_commit_callbacks(execute=True), path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    copies_by_uid = {
        c.instance.sop_instance_uid: (c.key, c.sha256, c.size, c.key_id, bytes(c.wrapped_key),
                                      bytes(c.nonce_prefix), c.segment_size)
        for c in Copy.objects.filter(tier=Copy.Tier.REPLICA).select_related("instance")}
    assert len(copies_by_uid) == 16
    assert not Copy.objects.filter(tier=Copy.Tier.REPLICA).exclude(
        state=Copy.State.VERIFIED).exists()
    return {"index": _snapshot(), "copies": copies_by_uid}


def test_with_the_local_disk_lost_too_the_index_and_files_come_back_from_the_replica(
    replicated, dicom_storage, ct_study, other_study
):
    originals = {p.read_bytes() for p in [*ct_study[1], *other_study[1]]}
    _lose_the_database()
    for path in stored_files(dicom_storage):
        path.unlink()

    code, out, err = _rebuild("--from", "replica")

    assert code == 0, err
    assert _snapshot() == replicated["index"]
    assert "16 instances" in out and "2 patients" in out
    # Each object is back on the local tier, byte for byte, under the key of its row.
    back = set()
    for instance in Instance.objects.all():
        with blobs.open_blob(instance.blob_key) as fp:
            data = fp.read()
        assert hashlib.sha256(data).hexdigest() == instance.sha256
        back.add(data)
        local = Copy.objects.get(instance=instance, tier=Copy.Tier.LOCAL)
        assert (local.key, local.state, local.sha256) == (
            instance.blob_key, Copy.State.WRITTEN, instance.sha256)
    assert back == originals
    # The replica copies are the objects that were there, verified, with their envelopes.
    rebuilt = {
        c.instance.sop_instance_uid: (c.key, c.sha256, c.size, c.key_id, bytes(c.wrapped_key),
                                      bytes(c.nonce_prefix), c.segment_size)
        for c in Copy.objects.filter(tier=Copy.Tier.REPLICA, state=Copy.State.VERIFIED)
        .select_related("instance")}
    assert rebuilt == replicated["copies"]
    assert copies.backlog() == []  # nothing for replication to upload again


def test_rebuilding_from_the_replica_twice_adds_nothing(replicated, dicom_storage):
    _lose_the_database()
    assert _rebuild("--from", "replica")[0] == 0
    files = len(stored_files(dicom_storage))
    rows = (Instance.objects.count(), Copy.objects.count(), Patient.objects.count())

    code, out, _ = _rebuild("--from", "replica")

    assert code == 0
    assert "0 instances" in out and "16 already indexed" in out
    assert (Instance.objects.count(), Copy.objects.count(), Patient.objects.count()) == rows
    assert len(stored_files(dicom_storage)) == files


def test_after_a_rebuild_from_the_local_files_the_replica_objects_become_their_copies(
    replicated, dicom_storage
):
    _lose_the_database()
    assert _rebuild("--from", "local")[0] == 0
    files = len(stored_files(dicom_storage))
    assert len(copies.backlog()) == 16  # no copy known yet: all would be uploaded again

    code, out, _ = _rebuild("--from", "replica")

    assert code == 0
    assert "0 instances" in out and "16 copies of objects indexed" in out
    assert len(stored_files(dicom_storage)) == files
    assert copies.backlog() == []
    assert {c.instance.sop_instance_uid: c.key for c in Copy.objects.filter(
        tier=Copy.Tier.REPLICA).select_related("instance")} == {
        uid: found[0] for uid, found in replicated["copies"].items()}


def test_replica_objects_that_cannot_be_decrypted_are_named_with_the_reason(
    replicated, replica
):
    keys = sorted(found[0] for found in replicated["copies"].values())
    # One with no envelope at all, one altered, one under a key this ring does not hold.
    replica.put_object(Key="objects/stray", Body=b"x" * 100)
    altered = replica.Object(keys[0]).get()
    body = bytearray(altered["Body"].read())
    body[10] ^= 1
    replica.put_object(Key=keys[0], Body=bytes(body), Metadata=altered["Metadata"])
    foreign = replica.Object(keys[1]).get()
    meta = Envelope.from_metadata(foreign["Metadata"]).to_metadata()
    meta["replica-key-id"] = "k9"
    replica.put_object(Key=keys[1], Body=foreign["Body"].read(), Metadata=meta)
    _lose_the_database()

    code, out, err = _rebuild("--from", "replica")

    assert code == 1
    assert Instance.objects.count() == 14
    assert "objects/stray: replica metadata lacks" in err
    assert f"{keys[0]}: replica object is not what was encrypted" in err
    assert f"{keys[1]}: replica key 'k9' is not in REPLICA_KEYS" in err
    assert "3 not recovered" in out


def test_rebuilding_from_the_replica_needs_one(settings):
    settings.REPLICA_URL = ""
    with pytest.raises(Exception, match="no replica is configured"):
        call_command("rebuild_index", "--from", "replica", "--no-progress")


def test_the_local_tier_of_an_empty_storage_rebuilds_nothing(db, dicom_storage: Path):
    code, out, _ = _rebuild("--from", "local")
    assert code == 0 and "0 instances" in out and "0 objects listed" in out


def _purge(patient: Patient, alice: Any) -> None:
    """The patient purged at the end of retention; the deletion of the files not run yet
    (this test's transaction never commits), so they are still on disk."""
    from privacy import retention

    after_retention = datetime.date(2047, 1, 1)
    (request,) = [r for r in retention.list_due(after_retention) if r.patient_pk == patient.pk]
    retention.approve(request.pk, alice, "vencido")
    retention.purge(request.pk, alice, "vencido", today=after_retention)


def test_a_purged_patient_is_never_brought_back_by_a_rebuild(
    paulas_record, charlies_record, alice, dicom_storage
):
    from privacy.models import PendingBlobDeletion, Tombstone

    _purge(charlies_record, alice)
    assert Tombstone.objects.count() == 1 and PendingBlobDeletion.objects.count() == 4
    assert len(stored_files(dicom_storage)) == 16  # charlie's files still await deletion
    _lose_the_database()
    # Even with the deletion list lost as well, the tombstone still says who was purged.
    PendingBlobDeletion.objects.all().delete()

    code, out, _ = _rebuild("--from", "local")

    assert code == 0
    assert "4 of purged patients skipped" in out
    assert list(Patient.objects.values_list("patient_id", flat=True)) == ["PAULA-001"]
    assert Instance.objects.count() == 12
    assert len(stored_files(dicom_storage)) == 16  # kept: deleting them is the purge's job


def test_an_unreachable_replica_is_a_clear_error(db, settings):
    settings.REPLICA_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.REPLICA_BUCKET, settings.REPLICA_REGION = "nowhere", REGION
    settings.REPLICA_KEYS, settings.REPLICA_CURRENT_KEY = KEYS, "k1"
    with pytest.raises(CommandError, match="the replica cannot be read now"):
        call_command("rebuild_index", "--from", "replica", "--no-progress")


@pytest.fixture
def dicom_bucket(s3_endpoint: str, settings: Any) -> Iterator[Any]:  # noqa: F811
    """The ``dicom`` storage itself in an S3 bucket (``S3_BUCKET``), as settings.py sets it."""
    from django.conf import settings as django_settings

    s3 = boto3.resource("s3", endpoint_url=s3_endpoint, region_name=REGION, **CREDENTIALS)
    bucket = s3.create_bucket(Bucket=f"dicom-{uuid.uuid4().hex[:12]}")
    settings.STORAGES = {**django_settings.STORAGES, "dicom": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": bucket.name, "endpoint_url": s3_endpoint,
                    "region_name": REGION, "access_key": CREDENTIALS["aws_access_key_id"],
                    "secret_key": CREDENTIALS["aws_secret_access_key"], "location": "",
                    "file_overwrite": False, "default_acl": None},
    }}
    yield bucket
    bucket.objects.all().delete()
    bucket.delete()


def test_a_local_tier_in_an_s3_bucket_is_rebuilt_the_same_way(db, dicom_bucket, ct_study):
    for path in ct_study[1]:
        with path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    before = _snapshot()
    keys = sorted(o.key for o in dicom_bucket.objects.all())
    _lose_the_database()

    code, out, err = _rebuild("--from", "local")

    assert code == 0, err
    assert _snapshot() == before and "12 instances" in out
    assert sorted(o.key for o in dicom_bucket.objects.all()) == keys


def test_a_study_a_tombstone_lists_is_not_restored_from_the_replica(
    replicated, dicom_storage, other_study
):
    from privacy.models import Tombstone

    charlie = Patient.objects.get(patient_id="CHARLIE-002")
    Tombstone.objects.create(patient_pk=charlie.pk, patient_id=charlie.patient_id,
                             studies=[{"uid": other_study[0]}], approved_by_name="alice",
                             purged_by_name="alice", reason="vencido")
    _lose_the_database()
    for path in stored_files(dicom_storage):
        path.unlink()

    code, out, _ = _rebuild("--from", "replica")

    assert code == 0
    assert "4 of purged patients skipped" in out
    assert list(Patient.objects.values_list("patient_id", flat=True)) == ["PAULA-001"]
    # Nothing of charlie's is written back to the local tier.
    assert len(stored_files(dicom_storage)) == Instance.objects.count() == 12


def test_an_object_refused_while_indexing_keeps_its_file(archive, dicom_storage, ct_study):
    """Its series belongs to another study: ingest refuses it when it indexes the batch, and
    the file it was given to index where it lies is not deleted with the refusal."""
    import pydicom
    from pydicom.uid import generate_uid

    dataset = pydicom.dcmread(ct_study[1][0])
    dataset.StudyInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    stray = dicom_storage / "ffd" / "other-study.dcm"
    stray.parent.mkdir(exist_ok=True)
    dataset.save_as(stray, enforce_file_format=True)
    content = stray.read_bytes()
    _lose_the_database()

    code, _, err = _rebuild("--from", "local")

    assert code == 1
    assert "ffd/other-study.dcm: rejected: SeriesInstanceUID" in err
    assert "already belongs to another study" in err
    assert _snapshot() == archive
    assert stray.read_bytes() == content
