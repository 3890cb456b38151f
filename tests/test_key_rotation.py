"""Key rotation re-wraps every replica object's data key under the new current key, against
a real S3 endpoint (moto's server mode), without uploading a payload again; an old key is
retired only once neither a copy row nor an object's own metadata refers to it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditAction, AuditEvent
from imaging.ingest import Outcome, ingest
from imaging.models import Instance
from imaging.synthetic import PatientSpec, SeriesSpec, write_study
from replica import fixity as replica_fixity
from replica import payload, rotation
from replica.crypto import Envelope, rewrap
from replica.keys import KeyRing
from replica.models import Copy
from tests.s3_support import CREDENTIALS, REGION, s3_endpoint  # noqa: F401

pytestmark = pytest.mark.django_db

K1 = f"k1:{base64.b64encode(b'1' * 32).decode()}"
K2 = f"k2:{base64.b64encode(b'2' * 32).decode()}"


@pytest.fixture(scope="module")
def large_study(tmp_path_factory: Any) -> tuple[str, list[Path]]:
    """One slice of 2100x2100 (8.8 MB): past the managed copy's multipart threshold."""
    folder = tmp_path_factory.mktemp("large-study")
    return write_study(folder, PatientSpec("LARGE-1", "Lima^Luiz", datetime.date(1960, 1, 1),
                                           "M"), [SeriesSpec("CT", 1, size=2100)],
                       study_date=datetime.date(2026, 1, 5), accession="ACC-L1",
                       description="CT")


@pytest.fixture
def replica(s3_endpoint: str, settings: Any) -> Iterator[Any]:  # noqa: F811
    s3 = boto3.resource("s3", endpoint_url=s3_endpoint, region_name=REGION, **CREDENTIALS)
    bucket = s3.create_bucket(Bucket=f"replica-{uuid.uuid4().hex[:12]}")
    settings.REPLICA_URL, settings.REPLICA_BUCKET = s3_endpoint, bucket.name
    settings.REPLICA_REGION, settings.REPLICA_PREFIX = REGION, "objects/"
    settings.REPLICA_ACCESS_KEY_ID = CREDENTIALS["aws_access_key_id"]
    settings.REPLICA_SECRET_ACCESS_KEY = CREDENTIALS["aws_secret_access_key"]
    settings.REPLICA_KEYS, settings.REPLICA_CURRENT_KEY = K1, "k1"
    # Unpacked, so that the large object stays past the multipart copy threshold.
    settings.REPLICA_PACKING = False
    yield bucket
    bucket.objects.all().delete()
    bucket.delete()


@pytest.fixture
def replicated(replica, ct_study, large_study, django_capture_on_commit_callbacks
               ) -> list[Copy]:
    """Four objects replicated under k1, one of them large."""
    for path in [*ct_study[1][:3], large_study[1][0]]:
        with django_capture_on_commit_callbacks(execute=True), path.open("rb") as fp:
            assert ingest(fp, source="test").outcome == Outcome.STORED
    copies = list(Copy.objects.filter(tier=Copy.Tier.REPLICA).select_related("instance"))
    assert {(c.state, c.key_id) for c in copies} == {(Copy.State.VERIFIED, "k1")}
    assert max(replica.Object(c.key).content_length for c in copies) > 8 * 1024 * 1024
    return copies


def _make_k2_current(settings: Any) -> None:
    settings.REPLICA_KEYS, settings.REPLICA_CURRENT_KEY = f"{K1},{K2}", "k2"


def _ciphertexts(bucket: Any) -> dict[str, bytes]:
    return {o.key: o.get()["Body"].read() for o in bucket.objects.all()}


def _restored(bucket: Any, key: str, ring: KeyRing) -> bytes:
    """An object as a restore from the bucket alone reads it: its own metadata's envelope."""
    obj = bucket.Object(key).get()
    return payload.reader(obj["Body"], ring, Envelope.from_metadata(obj["Metadata"])).read()


def test_rotation_rewraps_every_data_key_and_leaves_every_ciphertext_byte_as_it_was(
    replicated, replica, settings, capsys
):
    before = _ciphertexts(replica)
    _make_k2_current(settings)

    call_command("replica_rotate_keys", "--batch", "3", "--no-progress")

    out = capsys.readouterr().out
    assert "4 copies to re-wrap under key 'k2'" in out and "4 rotated" in out
    assert "Every replica copy is under key 'k2'." in out
    assert _ciphertexts(replica) == before  # not one payload byte uploaded again
    only_k2 = KeyRing({"k2": b"2" * 32}, "k2")  # k1 gone: everything still reads
    for copy in Copy.objects.filter(tier=Copy.Tier.REPLICA).select_related("instance"):
        assert copy.key_id == "k2" and copy.key in before
        meta = replica.Object(copy.key).metadata
        assert meta["replica-key-id"] == "k2"
        assert base64.b64decode(meta["replica-wrapped-key"]) == bytes(copy.wrapped_key)
        plain = _restored(replica, copy.key, only_k2)
        assert hashlib.sha256(plain).hexdigest() == copy.instance.sha256
    settings.REPLICA_KEYS = K2  # and fixity, through the rows, reads them under k2 alone
    report = replica_fixity.verify_due(older_than=datetime.timedelta(0))
    assert report.checked == 4 and not report.failures
    (entry,) = AuditEvent.objects.filter(action=AuditAction.KEY_ROTATION)
    assert entry.detail["rotated"] == 4 and entry.outcome == "allowed"


def test_a_second_run_finds_nothing_to_do(replicated, replica, settings, capsys):
    _make_k2_current(settings)
    call_command("replica_rotate_keys", "--no-progress")
    rows = list(Copy.objects.values_list("pk", "wrapped_key"))
    capsys.readouterr()

    call_command("replica_rotate_keys", "--no-progress")

    assert "0 copies to re-wrap" in capsys.readouterr().out
    assert list(Copy.objects.values_list("pk", "wrapped_key")) == rows


def test_a_run_interrupted_after_the_object_before_the_row_is_finished_by_the_next(
    replicated, replica, settings
):
    _make_k2_current(settings)
    ring = KeyRing.from_settings()
    copy = replicated[0]
    # What an interrupted run leaves: the object re-wrapped, its row still under k1.
    rewrapped = rewrap(Envelope.from_metadata(replica.Object(copy.key).metadata), ring)
    rotation.replace_metadata(copy.key, rewrapped.to_metadata())
    assert Copy.objects.get(pk=copy.pk).key_id == "k1"

    call_command("replica_rotate_keys", "--no-progress")

    row = Copy.objects.get(pk=copy.pk)
    assert row.key_id == "k2" and bytes(row.wrapped_key) == rewrapped.wrapped_key


def test_a_missing_object_is_reported_and_its_row_keeps_its_key(replicated, replica, settings):
    _make_k2_current(settings)
    replica.Object(replicated[1].key).delete()
    with pytest.raises(CommandError, match="1 copies were not re-wrapped"):
        call_command("replica_rotate_keys", "--no-progress")
    assert Copy.objects.get(pk=replicated[1].pk).key_id == "k1"
    assert Copy.objects.filter(key_id="k2").count() == 3


def test_an_old_key_is_retired_only_when_no_row_and_no_object_refers_to_it(
    replicated, replica, settings, capsys
):
    _make_k2_current(settings)
    with pytest.raises(CommandError, match="4 copy rows and 4 objects"):
        call_command("replica_rotate_keys", "--retire", "k1")
    with pytest.raises(CommandError, match="is REPLICA_CURRENT_KEY"):
        call_command("replica_rotate_keys", "--retire", "k2")

    call_command("replica_rotate_keys", "--no-progress")
    # One object's metadata put back under k1 (a restore from an old version, say): the
    # rows alone would say k1 is unused; the bucket says otherwise.
    copy = replicated[2]
    old = Envelope(key_id="k1", wrapped_key=bytes(copy.wrapped_key),
                   nonce_prefix=bytes(copy.nonce_prefix), segment_size=int(copy.segment_size or 0),
                   packing=copy.packing)
    rotation.replace_metadata(copy.key, old.to_metadata())
    with pytest.raises(CommandError, match="0 copy rows and 1 objects") as refused:
        call_command("replica_rotate_keys", "--retire", "k1")
    assert copy.key in str(refused.value)

    rotation.replace_metadata(
        copy.key, Envelope.from_metadata(_row_metadata(copy.pk)).to_metadata())
    capsys.readouterr()
    call_command("replica_rotate_keys", "--retire", "k1")
    assert "it can be removed from REPLICA_KEYS" in capsys.readouterr().out


def _row_metadata(copy_id: int) -> dict[str, str]:
    row = Copy.objects.get(pk=copy_id)
    return Envelope(key_id=row.key_id, wrapped_key=bytes(row.wrapped_key),
                    nonce_prefix=bytes(row.nonce_prefix),
                    segment_size=int(row.segment_size or 0), packing=row.packing).to_metadata()


def test_rotation_refuses_a_current_key_that_is_not_in_the_ring(replicated, settings):
    settings.REPLICA_CURRENT_KEY = "k3"
    with pytest.raises(CommandError, match="REPLICA_CURRENT_KEY 'k3' is not a key"):
        call_command("replica_rotate_keys", "--no-progress")
    # The same problem stops the portal's checks (replica.E001), before any replication.
    errors = [m for m in checks.run_checks(tags=[checks.Tags.security])
              if m.id == "replica.E001"]
    assert [e.msg for e in errors] == ["REPLICA_CURRENT_KEY 'k3' is not a key in REPLICA_KEYS"]
    assert Copy.objects.filter(key_id="k1").count() == len(replicated)


def test_copies_written_under_the_new_key_need_no_rotation(
    replicated, replica, settings, ct_study, django_capture_on_commit_callbacks
):
    _make_k2_current(settings)
    with django_capture_on_commit_callbacks(execute=True), ct_study[1][5].open("rb") as fp:
        result = ingest(fp, source="test")
    assert result.instance_id is not None
    new = Copy.objects.get(instance_id=result.instance_id, tier=Copy.Tier.REPLICA)
    assert new.key_id == "k2"
    assert new.pk not in set(rotation.pending(KeyRing.from_settings()).values_list("pk",
                                                                                  flat=True))
    assert Instance.objects.count() == 5
