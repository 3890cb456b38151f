"""``manage.py reconcile`` compares the index with each tier (the local storage, and the
encrypted replica on a real S3 endpoint: moto's server mode) and lists what is missing and
what no row refers to.

With ``--repair`` a missing or damaged local file comes back, byte for byte, from its
verified replica copy, and a missing replica object is queued for replication again; with
``--quarantine`` orphans are moved aside, never deleted. Objects younger than ``--min-age``
are not orphans. Every repair is on the audit trail. Exit status 0 means clean, or
everything found repaired; 1 means problems remain.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import time
import uuid
from pathlib import Path

import boto3
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditAction, AuditEvent
from imaging.ingest import Outcome, ingest
from imaging.models import Instance
from portal.celery import app
from replica import tasks
from replica.models import Copy
from tests import replica_support
from tests.celery_support import REDIS_URL, running_worker
from tests.replica_support import KEYS, configure
from tests.s3_support import (  # noqa: F401 - s3_endpoint is a fixture
    CREDENTIALS,
    REGION,
    free_port,
    s3_endpoint,
)

AN_HOUR_AGO = time.time() - 3700


def _reconcile(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("reconcile", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _entries(operation: str) -> list[AuditEvent]:
    return [e for e in AuditEvent.objects.filter(username="reconcile")
            if e.detail.get("operation") == operation]


# The commands speak the portal's language (pt-BR by default); these tests read English.
pytestmark = pytest.mark.usefixtures("in_english")


replica = replica_support.replica


@pytest.fixture
def replicated(db, replica, ct_study, django_capture_on_commit_callbacks) -> list[Path]:
    """paula's CT study stored and replicated: every replica copy verified."""
    for path in ct_study[1]:
        with django_capture_on_commit_callbacks(execute=True), path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    assert Copy.objects.filter(tier=Copy.Tier.REPLICA, state=Copy.State.VERIFIED).count() == 12
    return list(ct_study[1])


def _original(instance: Instance, paths: list[Path]) -> bytes:
    (found,) = [p.read_bytes() for p in paths
                if hashlib.sha256(p.read_bytes()).hexdigest() == instance.sha256]
    return found


def test_an_archive_where_every_object_is_in_place_is_clean(replicated):
    code, out, err = _reconcile("--verify")
    assert code == 0, err
    assert "local: 12 objects listed, 12 verified" in out
    assert "replica: 12 objects listed, 12 verified" in out
    assert "Clean" in out


# --- the local tier -----------------------------------------------------------------------


def test_a_missing_local_file_is_listed_and_left_a_problem_without_repair(
    replicated, dicom_storage
):
    instance = Instance.objects.order_by("pk").first()
    assert instance is not None
    (dicom_storage / instance.blob_key).unlink()

    code, out, err = _reconcile("--tier", "local")

    assert code == 1
    assert f"local missing: {instance.blob_key}: the stored file is missing" in err
    assert "1 of 1 problems remain" in out
    assert not (dicom_storage / instance.blob_key).exists()


def test_a_missing_local_file_is_restored_byte_identical_from_the_replica(
    replicated, dicom_storage
):
    instance = Instance.objects.order_by("pk").first()
    assert instance is not None
    (dicom_storage / instance.blob_key).unlink()
    replica_key = Copy.objects.get(instance=instance, tier=Copy.Tier.REPLICA).key

    code, out, err = _reconcile("--tier", "local", "--repair")

    assert code == 0, err
    assert f"restored from the replica copy {replica_key}" in out
    assert (dicom_storage / instance.blob_key).read_bytes() == _original(instance, replicated)
    (entry,) = _entries("restore-local")
    assert entry.action == AuditAction.STORE and entry.object_uid == instance.sop_instance_uid
    assert entry.detail["from"] == replica_key and entry.detail["sha256"] == instance.sha256
    assert _reconcile("--tier", "local", "--verify")[0] == 0


def test_a_damaged_local_file_is_moved_to_quarantine_and_restored_from_the_replica(
    replicated, dicom_storage, settings
):
    instance = Instance.objects.order_by("pk").first()
    assert instance is not None
    path = dicom_storage / instance.blob_key
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 0xFF
    path.write_bytes(bytes(damaged))

    assert _reconcile("--tier", "local")[0] == 0  # a listing alone cannot see it
    code, _, err = _reconcile("--tier", "local", "--verify")
    assert code == 1 and f"local damaged: {instance.blob_key}: content changed" in err

    code, _out, err = _reconcile("--tier", "local", "--verify", "--repair")

    assert code == 0, err
    assert path.read_bytes() == _original(instance, replicated)
    aside = dicom_storage / f"{settings.RECONCILE_QUARANTINE_PREFIX}{instance.blob_key}"
    assert aside.read_bytes() == bytes(damaged)  # never lost: kept aside
    assert Instance.objects.get(pk=instance.pk).fixity_ok is True
    assert _entries("restore-local")[0].detail["damaged_moved_to"] == str(
        aside.relative_to(dicom_storage))


def test_without_a_replica_a_missing_file_cannot_be_repaired_and_says_why(
    db, ct_study, dicom_storage
):
    with ct_study[1][0].open("rb") as fp:
        result = ingest(fp, source="test")
    assert result.instance_id is not None
    instance = Instance.objects.get(pk=result.instance_id)
    (dicom_storage / instance.blob_key).unlink()

    code, _, err = _reconcile("--repair")

    assert code == 1
    assert "no verified replica copy to restore it from" in err
    assert not _entries("restore-local")


def test_an_old_orphan_is_listed_then_quarantined_never_deleted(replicated, dicom_storage,
                                                                  settings):
    orphan = dicom_storage / "abc" / "left-behind.dcm"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"an ingest killed before its commit")
    os.utime(orphan, (AN_HOUR_AGO, AN_HOUR_AGO))

    code, _, err = _reconcile("--tier", "local")
    assert code == 1 and "local orphan: abc/left-behind.dcm" in err
    assert orphan.exists()

    code, _out, err = _reconcile("--tier", "local", "--quarantine")

    assert code == 0, err
    aside = dicom_storage / settings.RECONCILE_QUARANTINE_PREFIX / "abc" / "left-behind.dcm"
    assert not orphan.exists()
    assert aside.read_bytes() == b"an ingest killed before its commit"
    (entry,) = _entries("quarantine")
    assert entry.detail["key"] == "abc/left-behind.dcm" and entry.detail["tier"] == "local"
    assert Instance.objects.count() == 12
    # What is in quarantine is not listed again.
    assert _reconcile("--tier", "local")[0] == 0


def test_a_killed_recalls_old_spill_file_is_listed_and_deleted_on_repair(
    replicated, dicom_storage
):
    instance = Instance.objects.order_by("pk").first()
    assert instance is not None
    folder = (dicom_storage / instance.blob_key).parent
    spill = folder / ".recall-k1ll3d.part"
    spill.write_bytes((dicom_storage / instance.blob_key).read_bytes()[:1000])
    os.utime(spill, (AN_HOUR_AGO, AN_HOUR_AGO))
    in_flight = folder / ".recall-n0w.part"  # a recall still running: left alone
    in_flight.write_bytes(b"partial")
    key = str(spill.relative_to(dicom_storage))

    code, _, err = _reconcile("--tier", "local")
    assert code == 1 and f"local leftover: {key}: a temporary file left by a recall" in err
    assert "orphan" not in err and spill.exists()

    code, out, err = _reconcile("--tier", "local", "--repair")

    assert code == 0, err
    assert f"{key}" in out and "-> deleted" in out
    assert not spill.exists() and in_flight.exists()
    assert (dicom_storage / instance.blob_key).exists()
    (entry,) = _entries("remove-leftover")
    assert entry.detail["key"] == key


def test_an_unreferenced_object_younger_than_min_age_is_not_an_orphan(replicated,
                                                                       dicom_storage):
    young = dicom_storage / "abc" / "in-flight.dcm"
    young.parent.mkdir(exist_ok=True)
    young.write_bytes(b"an ingest not committed yet")

    code, out, _ = _reconcile("--tier", "local", "--quarantine")  # default: an hour
    assert code == 0 and "1 unreferenced objects younger than --min-age" in out
    assert young.exists()

    code, _, err = _reconcile("--tier", "local", "--min-age", "0")
    assert code == 1 and "local orphan: abc/in-flight.dcm" in err
    assert young.exists()


# --- the replica --------------------------------------------------------------------------


def test_a_missing_replica_object_is_queued_again_and_replicated(
    replicated, replica, django_capture_on_commit_callbacks
):
    copy = Copy.objects.filter(tier=Copy.Tier.REPLICA).order_by("pk").first()
    assert copy is not None
    replica.Object(copy.key).delete()

    code, _, err = _reconcile("--tier", "replica")
    assert code == 1 and f"replica missing: {copy.key}" in err

    with django_capture_on_commit_callbacks(execute=True):
        code, out, err = _reconcile("--tier", "replica", "--repair")

    assert code == 0, err
    assert "queued for replication again" in out
    again = Copy.objects.get(pk=copy.pk)
    assert again.state == Copy.State.VERIFIED and again.key != copy.key
    assert again.key in {o.key for o in replica.objects.all()}
    (entry,) = _entries("requeue-replica")
    assert entry.detail["key"] == copy.key
    assert entry.object_uid == copy.instance.sop_instance_uid
    assert _reconcile("--verify")[0] == 0


def test_a_damaged_replica_object_is_found_by_verify_and_kept_when_queued_again(
    replicated, replica, django_capture_on_commit_callbacks
):
    copy = Copy.objects.filter(tier=Copy.Tier.REPLICA).order_by("pk").first()
    assert copy is not None
    obj = replica.Object(copy.key).get()
    body = bytearray(obj["Body"].read())
    body[5] ^= 1
    replica.put_object(Key=copy.key, Body=bytes(body), Metadata=obj["Metadata"])

    assert _reconcile("--tier", "replica")[0] == 0
    code, _, err = _reconcile("--tier", "replica", "--verify")
    assert code == 1 and f"replica damaged: {copy.key}: replica object is not what" in err

    with django_capture_on_commit_callbacks(execute=True):
        assert _reconcile("--tier", "replica", "--verify", "--repair")[0] == 0

    assert Copy.objects.get(pk=copy.pk).state == Copy.State.VERIFIED
    # The damaged object is not deleted: it is an orphan now, for --quarantine.
    assert replica.Object(copy.key).get()["Body"].read() == bytes(body)
    code, _, err = _reconcile("--tier", "replica", "--min-age", "0")
    assert code == 1 and f"replica orphan: {copy.key}" in err


def test_replica_orphans_are_only_listed_unless_quarantined(replicated, replica, settings):
    replica.put_object(Key="objects/stray", Body=b"an upload whose attempt died",
                       Metadata={"replica-format": "1"})

    code, _, err = _reconcile("--tier", "replica", "--min-age", "0")
    assert code == 1 and "replica orphan: objects/stray" in err
    assert replica.Object("objects/stray").get()["Body"].read()

    code, _out, err = _reconcile("--tier", "replica", "--min-age", "0", "--quarantine")

    assert code == 0, err
    keys = {o.key for o in replica.objects.all()}
    assert "objects/stray" not in keys
    moved = replica.Object(f"{settings.RECONCILE_QUARANTINE_PREFIX}objects/stray").get()
    assert moved["Body"].read() == b"an upload whose attempt died"
    assert moved["Metadata"] == {"replica-format": "1"}
    assert _entries("quarantine")[0].detail["tier"] == "replica"
    assert _reconcile("--tier", "replica", "--min-age", "0")[0] == 0


def test_instances_stored_before_the_replica_was_configured_are_listed_and_enrolled(
    db, ct_study, settings, s3_endpoint  # noqa: F811
):
    with ct_study[1][0].open("rb") as fp:
        assert ingest(fp, source="test").outcome == Outcome.STORED
    s3 = boto3.resource("s3", endpoint_url=s3_endpoint, region_name=REGION, **CREDENTIALS)
    bucket = s3.create_bucket(Bucket=f"reconcile-{uuid.uuid4().hex[:12]}")
    configure(settings, s3_endpoint, bucket.name)

    code, _, err = _reconcile("--tier", "replica")
    assert code == 1 and "replica unenrolled" in err

    assert _reconcile("--tier", "replica", "--repair")[0] == 0
    assert Copy.objects.filter(tier=Copy.Tier.REPLICA, state=Copy.State.PENDING).count() == 1
    assert _entries("enrol-replica")


def test_the_replica_tier_needs_a_replica(db, settings):
    settings.REPLICA_URL = ""
    with pytest.raises(Exception, match="no replica is configured"):
        call_command("reconcile", "--tier", "replica")


@pytest.mark.slow
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
@pytest.mark.django_db(transaction=True)
def test_a_requeued_copy_is_replicated_by_a_real_worker_from_the_backlog(
    settings, ct_study, dicom_storage, tmp_path, s3_endpoint  # noqa: F811
):
    """The repair commits the copy as pending: if its dispatch is lost, the backlog drain
    on a real Celery worker still replicates it."""
    s3 = boto3.resource("s3", endpoint_url=s3_endpoint, region_name=REGION, **CREDENTIALS)
    bucket = s3.create_bucket(Bucket=f"reconcile-{uuid.uuid4().hex[:12]}")
    env = configure(settings, s3_endpoint, bucket.name)
    for path in ct_study[1][:3]:  # in-process replication as each commits
        with path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    copy = Copy.objects.filter(tier=Copy.Tier.REPLICA).order_by("pk").first()
    assert copy is not None and copy.state == Copy.State.VERIFIED
    bucket.Object(copy.key).delete()
    app.conf.task_always_eager = False  # the repair's dispatch goes to no worker
    try:
        assert _reconcile("--tier", "replica", "--repair")[0] == 0
        assert Copy.objects.get(pk=copy.pk).state == Copy.State.PENDING
        queue = f"test-reconcile-{uuid.uuid4().hex[:12]}"
        with running_worker(queue, dicom_storage, tmp_path / "worker.log", env) as log:
            queued = tasks.drain_backlog.apply_async(kwargs={"queue": queue}, queue=queue)
            assert queued.get(timeout=120) >= 1, log.read_text()
            deadline = time.monotonic() + 120
            while Copy.objects.get(pk=copy.pk).state != Copy.State.VERIFIED:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
    finally:
        app.conf.task_always_eager = True
    assert _reconcile("--verify")[0] == 0
    bucket.objects.all().delete()
    bucket.delete()


def test_files_of_a_purged_patient_awaiting_deletion_are_not_orphans_to_keep(
    paulas_record, charlies_record, alice, dicom_storage, settings
):
    from privacy import retention
    from privacy.models import PendingBlobDeletion

    after_retention = datetime.date(2047, 1, 1)
    (request,) = [r for r in retention.list_due(after_retention)
                  if r.patient_pk == charlies_record.pk]
    retention.approve(request.pk, alice, "vencido")
    retention.purge(request.pk, alice, "vencido", today=after_retention)
    waiting = set(PendingBlobDeletion.objects.values_list("key", flat=True))
    assert len(waiting) == 4 and all((dicom_storage / k).exists() for k in waiting)

    code, out, _ = _reconcile("--tier", "local", "--min-age", "0", "--quarantine")

    assert code == 0
    assert "4 files of purged patients awaiting deletion" in out
    assert all((dicom_storage / k).exists() for k in waiting)  # left to the purge
    assert not (dicom_storage / settings.RECONCILE_QUARANTINE_PREFIX).exists()


def test_an_unreachable_replica_is_a_clear_error(db, settings):
    settings.REPLICA_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.REPLICA_BUCKET, settings.REPLICA_REGION = "nowhere", REGION
    settings.REPLICA_KEYS, settings.REPLICA_CURRENT_KEY = KEYS, "k1"
    with pytest.raises(CommandError, match="the replica cannot be read now"):
        call_command("reconcile", "--tier", "replica")


def test_a_local_tier_in_an_s3_bucket_is_reconciled_the_same_way(
    db, s3_endpoint, settings, ct_study  # noqa: F811
):
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
    try:
        for path in ct_study[1][:3]:
            with path.open("rb") as fp:
                assert ingest(fp, source="test").outcome == Outcome.STORED
        bucket.put_object(Key="abc/left-behind.dcm", Body=b"orphan")

        assert _reconcile("--verify")[0] == 0  # younger than an hour
        code, _, err = _reconcile("--verify", "--min-age", "0", "--quarantine")

        assert code == 0, err
        keys = {o.key for o in bucket.objects.all()}
        assert "abc/left-behind.dcm" not in keys
        assert f"{settings.RECONCILE_QUARANTINE_PREFIX}abc/left-behind.dcm" in keys
        assert _reconcile("--verify", "--min-age", "0")[0] == 0
    finally:
        bucket.objects.all().delete()
        bucket.delete()
