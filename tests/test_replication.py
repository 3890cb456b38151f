"""Every stored object gets a verified, encrypted copy on the replica, against a real S3
endpoint (moto's server mode) and, for the outage, a real Celery worker on Redis.

A copy counts only once it has been read back, decrypted and found to hash to the
instance's SHA-256. An outage leaves a backlog (failed copies with their error), never a
gap: when the endpoint is back the drain replicates every one. With no replica configured
ingest writes no copy rows and makes exactly the queries it made before replication.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from imaging.ingest import IngestBatch, Outcome, ingest
from imaging.models import Instance, Study
from portal.celery import app
from replica import copies, payload, replicate, store, tasks
from replica.crypto import Envelope
from replica.keys import KeyRing
from replica.models import Copy
from tests import replica_support
from tests.celery_support import REDIS_URL, running_worker
from tests.conftest import PAULA
from tests.replica_support import configure, new_bucket
from tests.s3_support import (
    CREDENTIALS,
    REGION,
    MotoServer,
    free_port,
    s3_endpoint,  # noqa: F401 - a fixture
)

# The replica of every test here: a fresh bucket, and the settings a worker gets too.
_bucket = new_bucket
_configure = configure
replica = replica_support.replica


def _ingest(path: Path, capture: Any) -> Instance:
    """One object through the one ingest path, its on-commit work run as after a commit."""
    with capture(execute=True), path.open("rb") as fp:
        result = ingest(fp, source="test")
    assert result.outcome == Outcome.STORED and result.instance_id is not None
    return Instance.objects.get(pk=result.instance_id)


def _decrypted(bucket: Any, copy: Copy) -> bytes:
    """The replica object as a restore would read it: by its key, with the envelope from
    its own metadata."""
    obj = bucket.Object(copy.key).get()
    envelope = Envelope.from_metadata(obj["Metadata"])
    return payload.reader(obj["Body"], KeyRing.from_settings(), envelope).read()


@pytest.mark.django_db
def test_an_ingested_object_ends_with_a_verified_replica_copy_that_decrypts_to_its_bytes(
    replica, ct_study, django_capture_on_commit_callbacks
):
    path = ct_study[1][0]
    instance = _ingest(path, django_capture_on_commit_callbacks)

    local = Copy.objects.get(instance=instance, tier=Copy.Tier.LOCAL)
    assert (local.key, local.sha256, local.size) == (
        instance.blob_key, instance.sha256, instance.size_bytes)
    copy = Copy.objects.get(instance=instance, tier=Copy.Tier.REPLICA)
    assert copy.state == Copy.State.VERIFIED
    assert copy.verified_at is not None and copy.written_at is not None
    assert copy.sha256 == instance.sha256 and copy.attempts == 1 and copy.last_error == ""
    assert [o.key for o in replica.objects.all()] == [copy.key]
    assert copy.key.startswith("objects/")
    assert instance.blob_key.split("/")[-1].removesuffix(".dcm") not in copy.key
    assert bytes(copy.wrapped_key) and copy.key_id == "k1"
    assert replica.Object(copy.key).content_length == copy.size
    plain = _decrypted(replica, copy)
    assert plain == path.read_bytes()
    assert hashlib.sha256(plain).hexdigest() == instance.sha256

    # Idempotent: a second run changes nothing and uploads nothing.
    assert replicate.replicate_copy(copy.pk).outcome == replicate.Outcome.ALREADY
    again = Copy.objects.get(pk=copy.pk)
    assert (again.attempts, again.verified_at) == (1, copy.verified_at)


@pytest.mark.django_db
def test_the_replica_object_holds_no_preamble_patient_name_or_uid_in_clear(
    replica, ct_study, django_capture_on_commit_callbacks
):
    path = ct_study[1][1]
    instance = _ingest(path, django_capture_on_commit_callbacks)
    copy = Copy.objects.get(instance=instance, tier=Copy.Tier.REPLICA)
    obj = replica.Object(copy.key).get()
    stored = obj["Body"].read()
    clear = path.read_bytes()
    assert b"DICM" in clear and PAULA.name.encode() in clear  # the original has them
    series = instance.series
    for secret in (b"DICM", PAULA.name.encode(), b"Pereira", PAULA.patient_id.encode(),
                   instance.sop_instance_uid.encode(), series.series_instance_uid.encode(),
                   series.study.study_instance_uid.encode()):
        assert secret not in stored
        assert secret.decode() not in copy.key
        assert all(secret.decode() not in v for v in obj["Metadata"].values())


@pytest.mark.django_db
def test_a_failed_attempt_is_recorded_with_its_error_and_waits_its_backoff(
    settings, ct_study, django_capture_on_commit_callbacks
):
    _configure(settings, f"http://127.0.0.1:{free_port()}", "nowhere")  # nothing listens
    settings.REPLICA_RETRY_SECONDS = 60

    instance = _ingest(ct_study[1][2], django_capture_on_commit_callbacks)

    copy = Copy.objects.get(instance=instance, tier=Copy.Tier.REPLICA)
    assert copy.state == Copy.State.FAILED and copy.attempts == 1
    assert "Could not connect" in copy.last_error
    assert copy.claimed_until is not None and copy.claimed_until > timezone.now()
    assert copies.backlog() == []  # waiting out its backoff
    later = timezone.now() + (copy.claimed_until - timezone.now()) * 2
    assert copies.backlog(now=later) == [copy.pk]
    assert replicate.backoff(1) == 60 and replicate.backoff(3) == 240
    assert Instance.objects.filter(pk=instance.pk).exists()  # stored all the same


@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
@pytest.mark.django_db(transaction=True)
def test_a_sweep_queues_the_backlog_in_batches_and_not_again_while_the_broker_holds_it(
    settings, ct_study
):
    """An outage of hours must leave one task per copy in the queue, not one per sweep:
    the copies a sweep queued are queued again only once the broker would have given a
    dead worker's task back (its visibility timeout)."""
    _configure(settings, f"http://127.0.0.1:{free_port()}", "nowhere")  # nothing listens
    settings.REPLICA_RETRY_SECONDS = 0  # the failed copies are in the backlog at once
    settings.REPLICA_DISPATCH_BATCH = 2
    settings.CELERY_VISIBILITY_TIMEOUT = 600
    for path in ct_study[1][:5]:
        with path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    pending = sorted(Copy.objects.filter(tier=Copy.Tier.REPLICA, state=Copy.State.FAILED)
                     .values_list("pk", flat=True))
    assert len(pending) == 5 and sorted(copies.backlog()) == pending
    queue = f"test-drain-{uuid.uuid4().hex[:12]}"
    broker = redis.Redis.from_url(REDIS_URL)
    app.conf.task_always_eager = False
    try:
        assert tasks.drain_backlog(queue=queue) == 5
        assert tasks.drain_backlog(queue=queue) == 0  # all still in the queue
        queued = [json.loads(m) for m in broker.lrange(queue, 0, -1)]
    finally:
        app.conf.task_always_eager = True
        broker.delete(queue)
    assert {m["headers"]["task"] for m in queued} == {"replica.tasks.replicate_copies"}
    # Nobody waits for their outcome (the rows are the record): no result is kept.
    assert all(m["headers"]["ignore_result"] for m in queued)
    batches = [json.loads(base64.b64decode(m["body"]))[0][0] for m in queued]
    assert sorted(len(b) for b in batches) == [1, 2, 2]
    assert sorted(pk for b in batches for pk in b) == pending
    assert sorted(copies.backlog()) == pending  # still unreplicated, for admins and the CLI
    after_timeout = timezone.now() + datetime.timedelta(seconds=601)
    assert sorted(copies.reserve_backlog(100, now=after_timeout)) == pending


@pytest.mark.django_db
def test_a_damaged_local_file_is_not_replicated_as_a_good_copy(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks, settings
):
    settings.REPLICA_URL = ""  # stored first, replicated afterwards
    instance = _ingest(ct_study[1][3], django_capture_on_commit_callbacks)
    blob = dicom_storage / instance.blob_key
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(data)
    settings.REPLICA_URL = replica.meta.client.meta.endpoint_url
    (pk,) = copies.enrol_existing()

    attempt = replicate.replicate_copy(pk)

    assert attempt.outcome == replicate.Outcome.FAILED
    copy = Copy.objects.get(pk=pk)
    assert copy.state == Copy.State.FAILED and "does not match its SHA-256" in copy.last_error
    assert list(replica.objects.all()) == []


@pytest.mark.django_db
@pytest.mark.parametrize("packing", [True, False], ids=["packed", "as-stored"])
def test_a_truncated_local_file_is_not_replicated_and_nothing_is_uploaded(
    replica, ct_study, dicom_storage, django_capture_on_commit_callbacks, settings, packing
):
    """Small objects go up in one request of the length on record: a local file shorter
    than that is refused before anything is sent."""
    settings.REPLICA_URL = ""
    settings.REPLICA_PACKING = packing
    instance = _ingest(ct_study[1][3], django_capture_on_commit_callbacks)
    blob = dicom_storage / instance.blob_key
    blob.write_bytes(blob.read_bytes()[:-100])
    settings.REPLICA_URL = replica.meta.client.meta.endpoint_url
    (pk,) = copies.enrol_existing()

    attempt = replicate.replicate_copy(pk)

    assert attempt.outcome == replicate.Outcome.FAILED
    copy = Copy.objects.get(pk=pk)
    assert copy.state == Copy.State.FAILED
    assert ("does not match its SHA-256" in copy.last_error
            or f"is not its {instance.size_bytes} bytes on record" in copy.last_error)
    assert list(replica.objects.all()) == []


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_replicated_several_at_once_each_copy_uploaded_once(
    replica, ct_study, settings, monkeypatch
):
    settings.REPLICA_URL, url = "", settings.REPLICA_URL
    for path in ct_study[1][:6]:
        with path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    settings.REPLICA_URL = url
    ids = copies.enrol_existing()
    in_flight: set[str] = set()
    widest = 0
    lock = threading.Lock()
    real_put = store.put

    def watched_put(*args: Any, **kwargs: Any) -> None:
        nonlocal widest
        with lock:
            in_flight.add(threading.current_thread().name)
            widest = max(widest, len(in_flight))
        try:
            time.sleep(0.05)  # long enough for the others to start theirs
            real_put(*args, **kwargs)
        finally:
            with lock:
                in_flight.discard(threading.current_thread().name)

    monkeypatch.setattr(store, "put", watched_put)
    outcomes = replicate.replicate_many(ids, concurrency=3)

    assert [pk for pk, _ in outcomes] == ids
    assert {a.outcome for _, a in outcomes} == {replicate.Outcome.VERIFIED}
    assert widest == 3
    rows = Copy.objects.filter(pk__in=ids)
    assert {c.state for c in rows} == {Copy.State.VERIFIED}
    assert sorted(o.key for o in replica.objects.all()) == sorted(c.key for c in rows)
    assert all(c.attempts == 1 for c in rows)


@pytest.mark.django_db(transaction=True)
def test_two_workers_claiming_the_same_copy_only_one_uploads(replica, ct_study, settings):
    settings.REPLICA_URL, url = "", settings.REPLICA_URL
    with ct_study[1][4].open("rb") as fp:
        assert ingest(fp, source="test").outcome == Outcome.STORED
    settings.REPLICA_URL = url
    (pk,) = copies.enrol_existing()

    # The claim itself, raced: one conditional UPDATE wins.
    start = threading.Barrier(4)
    claims: list[bool] = []

    def claim() -> None:
        start.wait()
        try:
            claims.append(replicate.claim(pk) is not None)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claims) == [False, False, False, True]
    # The holder's lease keeps every other worker off, and nothing reached the replica.
    assert replicate.replicate_copy(pk).outcome == replicate.Outcome.BUSY
    assert list(replica.objects.all()) == []

    # Two whole replications at once, once the lease has run out: one uploads.
    Copy.objects.filter(pk=pk).update(claimed_until=timezone.now(), attempts=0)
    start = threading.Barrier(2)
    outcomes: list[replicate.Outcome] = []

    def run() -> None:
        start.wait()
        try:
            outcomes.append(replicate.replicate_copy(pk).outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(replicate.Outcome.VERIFIED) == 1
    assert set(outcomes) - {replicate.Outcome.VERIFIED} <= {
        replicate.Outcome.BUSY, replicate.Outcome.ALREADY}
    copy = Copy.objects.get(pk=pk)
    assert copy.state == Copy.State.VERIFIED and copy.attempts == 1
    assert len(list(replica.objects.all())) == 1


@pytest.mark.django_db
def test_an_attempt_that_outlived_its_lease_leaves_the_new_holders_copy_alone(
    replica, ct_study, settings
):
    settings.REPLICA_URL, url = "", settings.REPLICA_URL
    with ct_study[1][5].open("rb") as fp:
        assert ingest(fp, source="test").outcome == Outcome.STORED
    settings.REPLICA_URL = url
    (pk,) = copies.enrol_existing()
    stale = replicate.claim(pk)
    assert stale is not None
    stalled = Copy.objects.select_related("instance").get(pk=pk)  # a worker that stalls
    Copy.objects.filter(pk=pk).update(claimed_until=timezone.now())  # its lease runs out

    assert replicate.replicate_copy(pk).outcome == replicate.Outcome.VERIFIED
    with pytest.raises(replicate.LeaseLost):  # the stalled worker wakes up and uploads
        replicate.attempt(stalled, KeyRing.from_settings(), stale,
                          store.object_key("stalled-attempt"))

    copy = Copy.objects.select_related("instance").get(pk=pk)
    assert copy.state == Copy.State.VERIFIED
    assert [o.key for o in replica.objects.all()] == [copy.key]  # its object deleted
    assert hashlib.sha256(_decrypted(replica, copy)).hexdigest() == copy.instance.sha256


class Killed(BaseException):
    """SIGKILL as the attempt sees it: nothing after this point of it runs."""


@pytest.mark.django_db
def test_an_object_a_killed_worker_uploaded_but_never_recorded_is_deleted_by_the_next_attempt(
    replica, ct_study, settings, monkeypatch
):
    settings.REPLICA_URL, url = "", settings.REPLICA_URL
    with ct_study[1][5].open("rb") as fp:
        assert ingest(fp, source="test").outcome == Outcome.STORED
    settings.REPLICA_URL = url
    (pk,) = copies.enrol_existing()
    put = store.put

    def put_then_die(*args: Any, **kwargs: Any) -> None:
        put(*args, **kwargs)
        raise Killed  # the object is in the bucket, the row never says so

    monkeypatch.setattr(store, "put", put_then_die)
    with pytest.raises(Killed):
        replicate.replicate_copy(pk)
    (left,) = [o.key for o in replica.objects.all()]
    assert Copy.objects.get(pk=pk).key == ""
    monkeypatch.setattr(store, "put", put)
    Copy.objects.filter(pk=pk).update(claimed_until=timezone.now())  # its lease runs out

    assert replicate.replicate_copy(pk).outcome == replicate.Outcome.VERIFIED
    copy = Copy.objects.get(pk=pk)
    assert copy.key != left and copy.attempt_key == ""
    assert [o.key for o in replica.objects.all()] == [copy.key]


# Queries of ingest before replication existed (measured on main, SQLite and PostgreSQL,
# after the same warm-up): the first object of a new study, a further one of its series,
# then a batch of three more. The first is one more since a new study looks for the order
# of its accession number (orders.studies.link_study, MPPS), which is not replication's.
QUERIES_BEFORE_REPLICATION = [24, 7, 9]


@pytest.mark.django_db
def test_with_no_replica_ingest_writes_no_copies_and_makes_no_extra_queries(
    settings, ct_study, other_study, django_capture_on_commit_callbacks
):
    settings.REPLICA_URL = ""
    # Warmed up by another study first, so what earlier tests cached in this process does
    # not change the counts.
    _ingest_without_replication(other_study[1][0])
    paths = ct_study[1]
    counts = []
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        for path in paths[:2]:
            with path.open("rb") as fp, CaptureQueriesContext(connection) as queries:
                assert ingest(fp, source="test").outcome == Outcome.STORED
            counts.append(len(queries))
        batch = IngestBatch()
        files = [path.open("rb") for path in paths[2:5]]
        try:
            with CaptureQueriesContext(connection) as queries:
                for fp in files:
                    batch.add(fp, source="test")
                assert {r.outcome for r in batch.commit()} == {Outcome.STORED}
        finally:
            for fp in files:
                fp.close()
        counts.append(len(queries))
    assert counts == QUERIES_BEFORE_REPLICATION
    assert callbacks == []
    assert Instance.objects.count() == 6 and not Copy.objects.exists()


@pytest.mark.django_db
def test_the_replicate_command_brings_an_existing_archive_onto_the_replica(
    replica, ct_study, settings, capsys
):
    settings.REPLICA_URL, url = "", settings.REPLICA_URL
    paths = ct_study[1][:3]
    for path in paths:
        with path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    assert not Copy.objects.exists()
    settings.REPLICA_URL = url

    call_command("replicate", "--no-progress")

    assert "3 copies: 3 verified, 0 failed" in capsys.readouterr().out
    for copy in Copy.objects.filter(tier=Copy.Tier.REPLICA).select_related("instance"):
        assert copy.state == Copy.State.VERIFIED
        assert hashlib.sha256(_decrypted(replica, copy)).hexdigest() == copy.instance.sha256
    call_command("replicate", "--all-pending", "--no-progress")  # nothing left to do
    assert "0 copies" in capsys.readouterr().out
    assert Copy.objects.count() == 6


@pytest.mark.django_db
def test_the_replicate_command_refuses_a_key_it_cannot_read(replica, settings):
    settings.REPLICA_CURRENT_KEY = "k2"
    with pytest.raises(CommandError, match="REPLICA_CURRENT_KEY"):
        call_command("replicate", "--no-progress")


@pytest.mark.django_db
def test_admin_shows_counts_per_state_the_lag_and_each_studys_copies(
    replica, ct_study, settings, logged_in, django_capture_on_commit_callbacks
):
    paths = ct_study[1]
    _ingest(paths[0], django_capture_on_commit_callbacks)
    settings.REPLICA_URL, url = f"http://127.0.0.1:{free_port()}", settings.REPLICA_URL
    _ingest(paths[1], django_capture_on_commit_callbacks)  # fails: nothing listens
    settings.REPLICA_URL = url
    settings.REPLICA_RETRY_SECONDS = 0
    _ingest_without_replication(paths[2])  # committed, not yet replicated: pending
    Copy.objects.filter(state=Copy.State.PENDING).update(
        created=timezone.now() - datetime.timedelta(hours=3))

    page = logged_in.get("/admin/replica/copy/", HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Replica: 1 verified, 1 pending, 1 failed." in text
    assert "Replication lag: 3\xa0hours" in text

    page = logged_in.get("/admin/imaging/study/", HTTP_ACCEPT_LANGUAGE="en")
    assert "1 verified, 1 pending, 1 failed" in page.content.decode()
    study = Study.objects.get()
    page = logged_in.get(f"/admin/imaging/study/{study.pk}/change/")  # pt-br
    assert "1 verificada, 1 pendente, 1 com falha" in page.content.decode()


def _ingest_without_replication(path: Path) -> None:
    """Stored, its on-commit dispatch never run (this test's transaction never commits)."""
    with path.open("rb") as fp:
        assert ingest(fp, source="test").outcome == Outcome.STORED


@pytest.mark.slow
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL pointing at a Redis server")
@pytest.mark.django_db(transaction=True)
def test_an_outage_leaves_a_backlog_that_a_worker_drains_when_the_replica_is_back(
    settings, ct_study, dicom_storage, tmp_path
):
    server = MotoServer().start()
    try:
        bucket_name = _bucket(server.url).name
        env = _configure(settings, server.url, bucket_name)
        settings.REPLICA_RETRY_SECONDS = 0.5
        server.stop()  # the replica goes down

        paths = ct_study[1][:5]
        stored = []
        for path in paths:  # replication is tried in-process as each commits, and fails
            with path.open("rb") as fp:
                result = ingest(fp, source="test")
            assert result.outcome == Outcome.STORED and result.instance_id is not None
            stored.append(result.instance_id)
        backlog = Copy.objects.filter(tier=Copy.Tier.REPLICA)
        assert sorted(backlog.values_list("instance_id", flat=True)) == sorted(stored)
        assert set(backlog.values_list("state", flat=True)) == {Copy.State.FAILED}
        assert all("Could not connect" in e for e in backlog.values_list("last_error", flat=True))
        for instance in Instance.objects.all():  # nothing lost meanwhile
            assert (dicom_storage / instance.blob_key).is_file()

        server.start()  # back (moto keeps buckets in memory: its bucket made again)
        bucket = boto3.resource("s3", endpoint_url=server.url, region_name=REGION,
                                **CREDENTIALS).create_bucket(Bucket=bucket_name)
        time.sleep(0.6)  # the failed copies' backoff has passed
        queue = f"test-replica-{uuid.uuid4().hex[:12]}"
        with running_worker(queue, dicom_storage, tmp_path / "worker.log", env) as log:
            app.conf.task_always_eager = False
            try:
                queued = tasks.drain_backlog.apply_async(kwargs={"queue": queue}, queue=queue)
                assert queued.get(timeout=120) == len(paths), log.read_text()
                deadline = time.monotonic() + 120
                while backlog.exclude(state=Copy.State.VERIFIED).exists():
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.3)
            finally:
                app.conf.task_always_eager = True
        for copy in backlog.select_related("instance"):
            assert copy.last_error == "" and copy.attempts == 2
            assert hashlib.sha256(_decrypted(bucket, copy)).hexdigest() == copy.instance.sha256
        assert len(list(bucket.objects.all())) == len(paths)
    finally:
        server.stop()
