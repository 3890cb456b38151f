"""Fixity covers both tiers, and a bad copy is repaired from the good one.

Against a real S3 endpoint (moto's server mode) and, for the task, a real Celery worker on
Redis. A local file or replica object that is missing or changed raises an integrity alert
(the admin lists it, the index warns, the clinic's admins get an e-mail, the log an ERROR),
and is rewritten from the other copy only once that copy has been proven to hash to the
SHA-256 on record. When both are bad nothing is touched and the alert stays open.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts.models import Role, User
from audit.models import AuditAction, AuditEvent
from imaging import fixity, tasks
from imaging.ingest import Outcome, ingest
from imaging.models import Instance, Patient
from portal.celery import app
from replica import fixity as replica_fixity
from replica import payload
from replica.crypto import Envelope
from replica.keys import KeyRing
from replica.models import Copy, IntegrityAlert
from replica.tasks import verify_replica_copy
from tests.celery_support import REDIS_URL, running_worker
from tests.conftest import PASSWORD, story_clinic
from tests.s3_support import CREDENTIALS, REGION, free_port, s3_endpoint  # noqa: F401

pytestmark = pytest.mark.django_db

KEYS = f"k1:{base64.b64encode(b'k' * 32).decode()}"


def _environment(url: str, bucket: str) -> dict[str, str]:
    return {
        "REPLICA_URL": url, "REPLICA_BUCKET": bucket, "REPLICA_REGION": REGION,
        "REPLICA_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "REPLICA_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "REPLICA_PREFIX": "objects/", "REPLICA_KEYS": KEYS, "REPLICA_CURRENT_KEY": "k1",
    }


@pytest.fixture
def replica(s3_endpoint: str, settings: Any) -> Iterator[Any]:  # noqa: F811
    s3 = boto3.resource("s3", endpoint_url=s3_endpoint, region_name=REGION, **CREDENTIALS)
    bucket = s3.create_bucket(Bucket=f"replica-{uuid.uuid4().hex[:12]}")
    for name, value in _environment(s3_endpoint, bucket.name).items():
        setattr(settings, name, value)
    settings.LANGUAGE_CODE = "en"
    yield bucket
    bucket.objects.all().delete()
    bucket.delete()


@pytest.fixture
def carla(db) -> User:
    """The admin of Clínica Sul, paula's clinic: the one the alert e-mails go to."""
    user = User.objects.create_user("carla", "carla@example.org", PASSWORD, role=Role.ADMIN,
                                    is_staff=True)
    user.clinics.add(story_clinic())
    return user


@pytest.fixture
def stored(replica, ct_study, carla, olga, django_capture_on_commit_callbacks
           ) -> list[Instance]:
    """Three of paula's slices at Clínica Sul, each with a verified replica copy."""
    instances = []
    for path in ct_study[1][:3]:
        with django_capture_on_commit_callbacks(execute=True), path.open("rb") as fp:
            result = ingest(fp, source="test")
        assert result.outcome == Outcome.STORED and result.instance_id is not None
        instances.append(Instance.objects.get(pk=result.instance_id))
    Patient.objects.update(clinic=story_clinic())
    assert set(Copy.objects.filter(tier=Copy.Tier.REPLICA).values_list("state", flat=True)) == {
        Copy.State.VERIFIED}
    return instances


def _same(path: Path, instance: Instance) -> bool:
    return hashlib.sha256(path.read_bytes()).hexdigest() == instance.sha256


def _original_bytes(ct_study: tuple[str, list[Path]], instance: Instance) -> bytes:
    (path,) = [p for p in ct_study[1] if _same(p, instance)]
    return path.read_bytes()


def _replica_copy(instance: Instance) -> Copy:
    return Copy.objects.select_related("instance").get(instance=instance, tier=Copy.Tier.REPLICA)


def _decrypted(bucket: Any, copy: Copy) -> bytes:
    """The object as a restore from the bucket alone reads it: its own metadata's envelope."""
    obj = bucket.Object(copy.key).get()
    return payload.reader(obj["Body"], KeyRing.from_settings(),
                          Envelope.from_metadata(obj["Metadata"])).read()


def _flip_local(dicom_storage: Path, instance: Instance) -> bytes:
    path = dicom_storage / instance.blob_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(data)
    return bytes(data)


def _overwrite_replica(bucket: Any, copy: Copy) -> None:
    """Someone (or the provider's disks) changes bytes of the object in the bucket; its
    metadata stays as it was."""
    obj = bucket.Object(copy.key).get()
    body = bytearray(obj["Body"].read())
    body[len(body) // 3] ^= 0x40
    bucket.put_object(Key=copy.key, Body=bytes(body), Metadata=obj["Metadata"])


def _make_due(copy: Copy) -> None:
    Copy.objects.filter(pk=copy.pk).update(
        verified_at=timezone.now() - fixity.max_age() - datetime.timedelta(days=1))


def test_a_corrupted_local_file_is_found_alerted_and_rewritten_byte_for_byte_from_the_replica(
    stored, ct_study, dicom_storage, mailoutbox, caplog, settings
):
    instance = stored[0]
    damaged = _flip_local(dicom_storage, instance)

    with caplog.at_level(logging.ERROR):
        result = fixity.check_instance(instance.pk, alert=True)

    assert result.ok is False and result.repaired is True
    assert (dicom_storage / instance.blob_key).read_bytes() == _original_bytes(ct_study, instance)
    instance.refresh_from_db()
    assert instance.fixity_ok is True
    alert = IntegrityAlert.objects.get()
    assert (alert.instance_id, alert.tier, alert.kind) == (
        instance.pk, Copy.Tier.LOCAL, IntegrityAlert.Kind.MISMATCH)
    assert alert.repaired_at is not None and alert.repaired_from == Copy.Tier.REPLICA
    assert "content changed" in alert.detail
    assert "rewritten from the verified replica" in alert.detail
    assert any(r.levelno == logging.ERROR and f"integrity alert {alert.pk}" in r.getMessage()
               for r in caplog.records)
    (mail,) = mailoutbox
    assert mail.to == ["carla@example.org"]  # Clínica Sul's admin; not olga of Norte
    assert "repaired" in mail.subject
    assert f"/admin/replica/integrityalert/{alert.pk}/change/" in mail.body
    assert "Pereira" not in mail.body and "PAULA" not in mail.body  # no patient data by mail
    (entry,) = AuditEvent.objects.filter(action=AuditAction.REPAIR)
    assert entry.outcome == "allowed" and entry.object_uid == instance.sop_instance_uid
    assert entry.detail["from"] == "replica" and entry.detail["alert"] == alert.pk
    assert not [p for p in (dicom_storage / instance.blob_key).parent.iterdir()
                if p.name.startswith(".repair-")]  # no staging file left behind
    kept = dicom_storage / f"{settings.RECONCILE_QUARANTINE_PREFIX}{instance.blob_key}"
    assert kept.read_bytes() == damaged  # the damaged file is kept, not overwritten
    assert entry.detail["kept_as"] in alert.detail


def test_a_missing_local_file_is_written_again_from_the_replica(
    stored, ct_study, dicom_storage, mailoutbox
):
    instance = stored[1]
    (dicom_storage / instance.blob_key).unlink()

    assert fixity.verify_instance(instance.pk) is False  # it was found missing...
    assert (dicom_storage / instance.blob_key).read_bytes() == _original_bytes(ct_study, instance)
    alert = IntegrityAlert.objects.get()
    assert alert.kind == IntegrityAlert.Kind.MISSING and alert.repaired_at is not None
    assert fixity.verify_instance(instance.pk) is True  # ...and is whole now
    assert not (dicom_storage / "quarantine").exists()  # nothing damaged to keep
    assert len(mailoutbox) == 1


def test_a_replica_object_with_bytes_changed_in_the_bucket_is_found_and_uploaded_again(
    stored, ct_study, replica, mailoutbox, caplog
):
    instance = stored[0]
    copy = _replica_copy(instance)
    _overwrite_replica(replica, copy)
    _make_due(copy)

    with caplog.at_level(logging.ERROR):
        report = replica_fixity.verify_due()

    assert report.checked == 1 and len(report.failures) == 1  # only the one due
    (failure,) = report.failures
    assert failure.copy_id == copy.pk and failure.repaired
    alert = IntegrityAlert.objects.get()
    assert (alert.tier, alert.kind) == (Copy.Tier.REPLICA, IntegrityAlert.Kind.MISMATCH)
    assert alert.repaired_from == Copy.Tier.LOCAL and "authentication" in alert.detail
    repaired = _replica_copy(instance)
    assert repaired.state == Copy.State.VERIFIED and repaired.key != copy.key
    keys = {o.key for o in replica.objects.all()}
    assert copy.key in keys and repaired.key in keys  # the damaged object kept, as an orphan
    assert f"the damaged object is kept as {copy.key}" in alert.detail
    assert _decrypted(replica, repaired) == _original_bytes(ct_study, instance)
    assert "ERROR" in {r.levelname for r in caplog.records}
    assert len(mailoutbox) == 1 and "repaired" in mailoutbox[0].subject
    assert AuditEvent.objects.get(action=AuditAction.REPAIR).detail["from"] == "local"


def test_a_missing_replica_object_is_uploaded_again(stored, ct_study, replica):
    instance = stored[2]
    copy = _replica_copy(instance)
    replica.Object(copy.key).delete()

    result = replica_fixity.check_copy(copy.pk)

    assert result is not None and not result.ok and result.repaired
    assert IntegrityAlert.objects.get().kind == IntegrityAlert.Kind.MISSING
    assert _decrypted(replica, _replica_copy(instance)) == _original_bytes(ct_study, instance)


def test_an_object_whose_metadata_no_longer_opens_it_is_undecryptable_and_replaced(
    stored, replica
):
    copy = _replica_copy(stored[0])
    obj = replica.Object(copy.key)
    meta = dict(obj.metadata)
    meta["replica-wrapped-key"] = base64.b64encode(b"\0" * 60).decode()
    obj.copy_from(CopySource={"Bucket": replica.name, "Key": copy.key}, Metadata=meta,
                  MetadataDirective="REPLACE")

    result = replica_fixity.check_copy(copy.pk)

    assert result is not None and not result.ok and result.repaired
    assert IntegrityAlert.objects.get().kind == IntegrityAlert.Kind.UNDECRYPTABLE


def test_when_both_copies_are_bad_nothing_is_touched_and_the_alerts_stay_open(
    stored, dicom_storage, replica, mailoutbox
):
    instance = stored[0]
    copy = _replica_copy(instance)
    _overwrite_replica(replica, copy)
    damaged = _flip_local(dicom_storage, instance)

    assert fixity.check_instance(instance.pk, alert=True).repaired is False

    assert (dicom_storage / instance.blob_key).read_bytes() == damaged  # left as found
    assert [o.key for o in replica.objects.all() if o.key == copy.key] == [copy.key]
    local = IntegrityAlert.objects.get(tier=Copy.Tier.LOCAL)
    remote = IntegrityAlert.objects.get(tier=Copy.Tier.REPLICA)
    assert local.repaired_at is None and remote.repaired_at is None
    assert "the replica copy is not good either" in local.detail
    assert "the local file is not good either" in remote.detail
    assert len(mailoutbox) == 2
    assert all("NOT repaired" in m.subject for m in mailoutbox)
    assert AuditEvent.objects.get(action=AuditAction.REPAIR).outcome == "failed"
    instance.refresh_from_db()
    assert instance.fixity_ok is False

    # Found again at the next check: the same alert, no second e-mail.
    assert fixity.check_instance(instance.pk, alert=True).repaired is False
    assert IntegrityAlert.objects.filter(tier=Copy.Tier.LOCAL).count() == 1
    assert len(mailoutbox) == 2


def test_an_unreachable_replica_is_no_alert_but_a_check_to_retry(stored, settings):
    copy = _replica_copy(stored[0])
    settings.REPLICA_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens
    with pytest.raises(fixity.StorageUnavailable):
        replica_fixity.check_copy(copy.pk)
    assert not IntegrityAlert.objects.exists()
    assert _replica_copy(stored[0]).verified_at == copy.verified_at


def test_the_command_checks_both_tiers_and_fails_only_for_what_it_could_not_repair(
    stored, dicom_storage, replica, capsys
):
    _flip_local(dicom_storage, stored[0])
    call_command("verify_fixity")
    out = capsys.readouterr().out
    assert ("3 files checked: 2 ok, 1 failed; 3 replica objects checked: 3 ok, 0 failed; "
            "1 repaired from the other copy") in out

    _overwrite_replica(replica, _replica_copy(stored[1]))
    _flip_local(dicom_storage, stored[1])
    with pytest.raises(CommandError, match="2 stored copies failed the fixity check and "
                       "could not be repaired"):
        call_command("verify_fixity")
    assert ("3 files checked: 2 ok, 1 failed; 3 replica objects checked: 2 ok, 1 failed"
            in capsys.readouterr().out)


def test_admin_lists_alerts_by_filter_and_the_index_warns_of_open_ones(
    stored, dicom_storage, replica, client, carla, olga
):
    _overwrite_replica(replica, _replica_copy(stored[0]))
    _flip_local(dicom_storage, stored[0])
    fixity.check_instance(stored[0].pk, alert=True)
    from django.contrib.auth.models import Permission

    carla.user_permissions.add(*Permission.objects.filter(content_type__app_label="replica"))
    olga.user_permissions.add(*Permission.objects.filter(content_type__app_label="replica"))

    client.force_login(carla)
    index = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "2 stored copies are damaged or missing and not repaired." in index
    listed = client.get("/admin/replica/integrityalert/?repaired=no&tier=local",
                        HTTP_ACCEPT_LANGUAGE="en")
    assert listed.status_code == 200 and listed.context["cl"].result_count == 1
    assert client.get("/admin/replica/integrityalert/?repaired=yes").context[
        "cl"].result_count == 0
    alert = IntegrityAlert.objects.get(tier=Copy.Tier.LOCAL)
    page = client.get(f"/admin/replica/integrityalert/{alert.pk}/change/",
                      HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200 and "not good either" in page.content.decode()

    client.force_login(olga)  # another clinic's admin: nothing to see, nothing said
    index = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "damaged or missing" not in index
    assert client.get("/admin/replica/integrityalert/").context["cl"].result_count == 0
    assert client.get(f"/admin/replica/integrityalert/{alert.pk}/change/").status_code in (
        302, 404)  # absent for her, as every other clinic's row


def test_the_beat_task_dispatches_replica_copies_that_are_due(stored, replica):
    for instance in stored:
        Instance.objects.filter(pk=instance.pk).update(fixity_checked=timezone.now(),
                                                       fixity_ok=True)
    copy = _replica_copy(stored[0])
    _make_due(copy)
    assert tasks.verify_fixity.delay().get() == 1
    proven = _replica_copy(stored[0]).verified_at
    assert proven is not None and proven > timezone.now() - datetime.timedelta(minutes=1)


@pytest.mark.slow
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
@pytest.mark.django_db(transaction=True)
def test_a_worker_finds_a_damaged_replica_object_and_repairs_it(
    replica, ct_study, dicom_storage, tmp_path, settings
):
    path = ct_study[1][4]
    with path.open("rb") as fp:  # replicated in-process as it commits
        result = ingest(fp, source="test")
    assert result.instance_id is not None
    instance = Instance.objects.get(pk=result.instance_id)
    copy = _replica_copy(instance)
    assert copy.state == Copy.State.VERIFIED
    _overwrite_replica(replica, copy)
    _make_due(copy)
    due_before = (timezone.now() - fixity.max_age()).isoformat()

    queue = f"test-fixity-{uuid.uuid4().hex[:12]}"
    env = _environment(settings.REPLICA_URL, replica.name)
    with running_worker(queue, dicom_storage, tmp_path / "worker.log", env) as log:
        app.conf.task_always_eager = False
        try:
            queued = verify_replica_copy.apply_async((copy.pk, due_before), queue=queue)
            assert queued.get(timeout=120) is False, log.read_text()
            # Dispatched twice (an overlapping beat): proven since, nothing done again.
            again = verify_replica_copy.apply_async((copy.pk, due_before), queue=queue)
            assert again.get(timeout=120) is None, log.read_text()
        finally:
            app.conf.task_always_eager = True
    alert = IntegrityAlert.objects.get()
    assert alert.tier == Copy.Tier.REPLICA and alert.repaired_from == Copy.Tier.LOCAL
    assert _decrypted(replica, _replica_copy(instance)) == path.read_bytes()
    assert AuditEvent.objects.filter(action=AuditAction.REPAIR, outcome="allowed").count() == 1


def test_a_local_tier_on_s3_is_repaired_too(
    replica, s3_endpoint, settings, ct_study, carla, django_capture_on_commit_callbacks  # noqa: F811
):
    from django.conf import settings as django_settings

    s3 = boto3.resource("s3", endpoint_url=s3_endpoint, region_name=REGION, **CREDENTIALS)
    local = s3.create_bucket(Bucket=f"dicom-{uuid.uuid4().hex[:12]}")
    settings.STORAGES = {**django_settings.STORAGES, "dicom": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": local.name, "endpoint_url": s3_endpoint,
                    "region_name": REGION, "access_key": CREDENTIALS["aws_access_key_id"],
                    "secret_key": CREDENTIALS["aws_secret_access_key"], "location": "",
                    "file_overwrite": False, "default_acl": None}}}
    path = ct_study[1][3]
    with django_capture_on_commit_callbacks(execute=True), path.open("rb") as fp:
        result = ingest(fp, source="test")
    assert result.instance_id is not None
    instance = Instance.objects.get(pk=result.instance_id)
    local.put_object(Key=instance.blob_key, Body=b"not the object any more")
    try:
        assert fixity.check_instance(instance.pk, alert=True).repaired is True
        assert local.Object(instance.blob_key).get()["Body"].read() == path.read_bytes()
        kept = f"{settings.RECONCILE_QUARANTINE_PREFIX}{instance.blob_key}"
        assert sorted(o.key for o in local.objects.all()) == sorted([instance.blob_key, kept])
        assert local.Object(kept).get()["Body"].read() == b"not the object any more"
    finally:
        local.objects.all().delete()
        local.delete()


def test_a_check_that_only_looks_raises_no_alert_and_repairs_nothing(
    stored, dicom_storage, mailoutbox
):
    """``reconcile --verify`` without ``--repair`` re-hashes through the same check."""
    instance = stored[0]
    damaged = _flip_local(dicom_storage, instance)
    assert fixity.check_instance(instance.pk).ok is False
    assert (dicom_storage / instance.blob_key).read_bytes() == damaged
    assert not IntegrityAlert.objects.exists() and mailoutbox == []
