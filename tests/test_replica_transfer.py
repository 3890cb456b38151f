"""How a replica copy travels, against a real S3 endpoint (moto's server mode): a small
object in one ``PutObject`` of its known length, sent by the attempt's own thread; a large
one in multipart parts of bounded size; an attempt reads its copy row once and writes it
twice (the claim, the result); a dispatched batch keeps several copies in flight in the
worker's threads.

The requests are watched through botocore's own event hooks on the replica's client: what
reaches the endpoint, not how our code calls boto3.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from imaging.ingest import Outcome, ingest
from replica import copies, payload, reconcile, replicate, store, tasks
from replica.crypto import Envelope, ciphertext_size
from replica.keys import KeyRing
from replica.models import Copy
from tests.replica_support import replica  # noqa: F401 - a fixture
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture
from tests.test_packing_memory import write_multiframe_ct

# ruff: noqa: F811 - the replica fixture is imported by name


@contextmanager
def requests_sent() -> Iterator[list[tuple[str, str]]]:
    """(operation, thread name) of every request the replica's client sends meanwhile."""
    sent: list[tuple[str, str]] = []
    lock = threading.Lock()
    unique = f"watch-{uuid.uuid4().hex}"

    def watch(model: Any, **_: Any) -> None:
        with lock:
            sent.append((model.name, threading.current_thread().name))

    events = store.client().meta.events
    events.register("before-call.s3", watch, unique_id=unique)
    try:
        yield sent
    finally:
        events.unregister("before-call.s3", unique_id=unique)


def _stored_without_replica(paths: list[Path], settings: Any) -> list[int]:
    """Ingest with no replica, then enrol: the ids of the replica copies, pending."""
    settings.REPLICA_URL, url = "", settings.REPLICA_URL
    for path in paths:
        with path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    settings.REPLICA_URL = url
    return copies.enrol_existing()


def _plaintext(bucket: Any, copy: Copy) -> bytes:
    obj = bucket.Object(copy.key).get()
    return payload.reader(obj["Body"], KeyRing.from_settings(),
                          Envelope.from_metadata(obj["Metadata"])).read()


@pytest.mark.django_db
@pytest.mark.parametrize("packing", [True, False], ids=["packed", "as-stored"])
def test_a_small_object_goes_up_in_one_put_of_its_length_and_is_read_back_once(
    replica, ct_study, settings, packing
):
    settings.REPLICA_PACKING = packing
    (pk,) = _stored_without_replica([ct_study[1][0]], settings)

    with requests_sent() as sent:
        assert replicate.replicate_copy(pk).outcome == replicate.Outcome.VERIFIED

    # Sent by the attempt itself: no transfer manager's thread hand-offs.
    assert sent == [("PutObject", threading.current_thread().name),
                    ("GetObject", threading.current_thread().name)]
    copy = Copy.objects.select_related("instance").get(pk=pk)
    obj = replica.Object(copy.key)
    assert "-" not in obj.e_tag  # not a multipart upload
    assert obj.content_length == copy.size
    assert (copy.packing == payload.DCMPACK1) == packing
    assert hashlib.sha256(_plaintext(replica, copy)).hexdigest() == copy.instance.sha256


@pytest.mark.django_db
def test_a_large_object_goes_up_in_parts_and_decrypts_to_its_bytes(
    replica, tmp_path, settings
):
    """Past the multipart threshold the ciphertext stream goes up in 8 MiB parts (at most
    a few of them in memory): 20 MiB is three parts."""
    settings.REPLICA_PACKING = False
    path = tmp_path / "large.dcm"
    sha256 = write_multiframe_ct(path, frames=40)  # 40 x 512 KiB
    (pk,) = _stored_without_replica([path], settings)

    with requests_sent() as sent:
        assert replicate.replicate_copy(pk).outcome == replicate.Outcome.VERIFIED

    names = [name for name, _ in sent]
    assert names == ["CreateMultipartUpload", "UploadPart", "UploadPart", "UploadPart",
                     "CompleteMultipartUpload", "GetObject"]
    copy = Copy.objects.select_related("instance").get(pk=pk)
    obj = replica.Object(copy.key)
    assert obj.e_tag.strip('"').endswith("-3")
    assert obj.content_length == copy.size == ciphertext_size(path.stat().st_size,
                                                              copy.segment_size or 0)
    assert hashlib.sha256(_plaintext(replica, copy)).hexdigest() == sha256


@pytest.mark.django_db
def test_an_attempt_reads_its_row_once_and_writes_it_twice_whatever_its_outcome(
    replica, ct_study, dicom_storage, settings
):
    first, damaged = _stored_without_replica(ct_study[1][:2], settings)
    blob = dicom_storage / Copy.objects.get(pk=damaged).instance.blob_key
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(data)

    with CaptureQueriesContext(connection) as verified:
        assert replicate.replicate_copy(first).outcome == replicate.Outcome.VERIFIED
    with CaptureQueriesContext(connection) as failed:
        assert replicate.replicate_copy(damaged).outcome == replicate.Outcome.FAILED
    with CaptureQueriesContext(connection) as again:
        assert replicate.replicate_copy(first).outcome == replicate.Outcome.ALREADY

    # The row with its instance; the claim with the attempt's key; the result.
    assert [q["sql"].split()[0] for q in verified.captured_queries] == [
        "SELECT", "UPDATE", "UPDATE"]
    assert [q["sql"].split()[0] for q in failed.captured_queries] == [
        "SELECT", "UPDATE", "UPDATE"]
    assert len(again.captured_queries) == 1
    bad = Copy.objects.get(pk=damaged)
    assert bad.state == Copy.State.FAILED and bad.attempts == 1 and bad.key == ""
    good = Copy.objects.get(pk=first)
    assert good.state == Copy.State.VERIFIED and good.attempts == 1
    assert good.attempt_key == "" and good.verified_at == good.written_at


@pytest.mark.django_db
def test_a_failed_read_back_leaves_its_object_to_the_next_attempt_which_deletes_it(
    replica, ct_study, settings, monkeypatch
):
    (pk,) = _stored_without_replica([ct_study[1][1]], settings)

    def unreadable(*args: Any) -> None:
        raise replicate.Mismatch("read back as something else")

    monkeypatch.setattr(replicate, "_read_back", unreadable)
    assert replicate.replicate_copy(pk).outcome == replicate.Outcome.FAILED
    copy = Copy.objects.get(pk=pk)
    (left,) = [o.key for o in replica.objects.all()]
    assert copy.state == Copy.State.FAILED and copy.key == "" and copy.attempt_key == left
    # Still the copy's: reconcile does not call it an orphan, however old.
    found = reconcile.reconcile([reconcile.Tier.REPLICA], reconcile.Options(min_age=0))
    assert [p for p in found.problems if p.key == left] == []
    monkeypatch.undo()
    Copy.objects.filter(pk=pk).update(claimed_until=None)  # its backoff has passed

    assert replicate.replicate_copy(pk).outcome == replicate.Outcome.VERIFIED
    copy = Copy.objects.get(pk=pk)
    assert [o.key for o in replica.objects.all()] == [copy.key] != [left]
    assert copy.attempts == 2 and copy.attempt_key == ""


@pytest.mark.django_db(transaction=True)
def test_a_dispatched_batch_runs_in_the_workers_threads_each_copy_once(
    replica, ct_study, settings
):
    settings.REPLICA_CONCURRENCY = 3
    ids = _stored_without_replica(ct_study[1][:6], settings)

    with requests_sent() as sent:
        counted = tasks.replicate_copies.apply(args=(ids,)).get()

    assert counted == {"verified": 6}
    puts = [thread for name, thread in sent if name == "PutObject"]
    assert len(puts) == 6 and len([n for n, _ in sent if n == "GetObject"]) == 6
    assert len(set(puts)) == 3 and all(t.startswith("replicate") for t in puts)
    rows = Copy.objects.filter(pk__in=ids)
    assert {c.state for c in rows} == {Copy.State.VERIFIED}
    assert sorted(o.key for o in replica.objects.all()) == sorted(c.key for c in rows)
    assert {c.attempts for c in rows} == {1}
    # Run again (a redelivered task): nothing is sent.
    with requests_sent() as again:
        assert tasks.replicate_copies.apply(args=(ids,)).get() == {"already": 6}
    assert again == []
