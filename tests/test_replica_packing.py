# ruff: noqa: F811 - the replica and s3_endpoint fixtures are imported by name
"""The replica keeps objects packed (imaging.packing) under the encryption, and every read
gives back the original bytes: recall, fixity, rebuild from the bucket alone. Copies
written unpacked (before packing, or with REPLICA_PACKING off) keep reading; a packed object
that authenticates but does not unpack is damage, never wrong bytes."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest

from imaging import blobs, packing
from replica import copies, payload, replicate
from replica.crypto import EncryptingReader, Envelope, _unwrap
from replica.keys import KeyRing
from replica.models import Copy, IntegrityAlert
from replica.readback import read_replica
from replica.recall import RecallFailed
from tests.replica_support import (
    evict_all,
    replica,  # noqa: F401 - a fixture
    store_replicated,
)
from tests.s3_support import s3_endpoint  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db


def _read(instance: Any) -> bytes:
    with blobs.open_blob(instance.blob_key) as fp:
        return bytes(fp.read())


def test_a_replica_copy_is_packed_smaller_and_recalled_as_its_exact_bytes(
        replica, ct_study, dicom_storage, django_capture_on_commit_callbacks):
    paths = ct_study[1][:3]
    stored = store_replicated(paths, django_capture_on_commit_callbacks)
    for instance in stored:
        copy = Copy.objects.get(instance=instance, tier=Copy.Tier.REPLICA)
        assert copy.packing == payload.DCMPACK1
        obj = replica.Object(copy.key)
        assert obj.metadata["replica-packing"] == payload.DCMPACK1
        assert obj.content_length < instance.size_bytes / 1.5
        assert copy.size == obj.content_length
    evict_all(stored)
    for instance, path in zip(stored, paths, strict=True):
        data = _read(instance)
        assert data == path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == instance.sha256


def test_with_packing_off_copies_are_the_original_bytes_and_both_kinds_keep_reading(
        replica, ct_study, dicom_storage, settings, django_capture_on_commit_callbacks):
    settings.REPLICA_PACKING = False
    plain = store_replicated(ct_study[1][:2], django_capture_on_commit_callbacks)
    settings.REPLICA_PACKING = True
    packed = store_replicated(ct_study[1][2:4], django_capture_on_commit_callbacks)
    ring = KeyRing.from_settings()
    for instance in plain:
        copy = Copy.objects.get(instance=instance, tier=Copy.Tier.REPLICA)
        assert copy.packing == ""
        assert "replica-packing" not in replica.Object(copy.key).metadata
        assert replica.Object(copy.key).content_length > instance.size_bytes
    for instance in [*plain, *packed]:
        copy = Copy.objects.select_related("instance").get(instance=instance,
                                                           tier=Copy.Tier.REPLICA)
        assert read_replica(copy, ring) is None  # fixity's proof
    evict_all([*plain, *packed])
    for instance, path in zip([*plain, *packed], ct_study[1][:4], strict=True):
        assert _read(instance) == path.read_bytes()


def _repack_damaged(replica: Any, copy: Copy) -> None:
    """Put back the object with its packed plaintext changed but encrypted properly: it
    authenticates, and only unpacking can tell."""
    obj = replica.Object(copy.key).get()
    envelope = Envelope.from_metadata(obj["Metadata"])
    ring = KeyRing.from_settings()
    packed = bytearray(payload.reader(io.BytesIO(obj["Body"].read()), ring,
                                      Envelope(**{**envelope.__dict__, "packing": ""})).read())
    packed[len(packed) // 2] ^= 0x10
    sealed = EncryptingReader(io.BytesIO(bytes(packed)), _unwrap(envelope, ring), envelope)
    replica.put_object(Key=copy.key, Body=sealed.read(), Metadata=obj["Metadata"])


def test_a_packed_object_that_does_not_unpack_is_damage_and_never_recalled(
        replica, ct_study, dicom_storage, django_capture_on_commit_callbacks):
    (instance,) = store_replicated(ct_study[1][:1], django_capture_on_commit_callbacks)
    copy = Copy.objects.select_related("instance").get(instance=instance,
                                                       tier=Copy.Tier.REPLICA)
    _repack_damaged(replica, copy)
    problem = read_replica(copy, KeyRing.from_settings())
    assert problem is not None and problem.kind == IntegrityAlert.Kind.MISMATCH
    assert "packed object is damaged" in problem.reason
    evict_all([instance])
    with pytest.raises(RecallFailed, match="packed object is damaged"):
        _read(instance)
    assert not blobs.storage().exists(instance.blob_key)


def test_a_copy_row_and_metadata_that_disagree_on_packing_are_refused(
        replica, ct_study, dicom_storage, django_capture_on_commit_callbacks):
    (instance,) = store_replicated(ct_study[1][:1], django_capture_on_commit_callbacks)
    copy = Copy.objects.select_related("instance").get(instance=instance,
                                                       tier=Copy.Tier.REPLICA)
    Copy.objects.filter(pk=copy.pk).update(packing="")
    copy.refresh_from_db()
    problem = read_replica(copy, KeyRing.from_settings())
    assert problem is not None and problem.kind == IntegrityAlert.Kind.UNDECRYPTABLE


def test_a_packed_form_changed_after_it_was_proven_is_not_replicated(
        replica, ct_study, settings, monkeypatch, django_capture_on_commit_callbacks):
    """The read back does not unpack (the packed form was proven as it was packed); what is
    encrypted must then be that proven form, byte for byte."""
    proven = packing.pack_verified

    def proven_then_damaged(source: Any, out: Any, **kwargs: Any) -> Any:
        packed = proven(source, out, **kwargs)
        start = out.tell()
        out.seek(start + 200)
        byte = out.read(1)
        out.seek(start + 200)
        out.write(bytes([byte[0] ^ 1]))
        out.seek(start)
        return packed

    monkeypatch.setattr(packing, "pack_verified", proven_then_damaged)
    settings.REPLICA_URL, url = "", settings.REPLICA_URL
    store_replicated([ct_study[1][0]], django_capture_on_commit_callbacks)
    settings.REPLICA_URL = url
    (pk,) = copies.enrol_existing()

    attempt = replicate.replicate_copy(pk)

    assert attempt.outcome == replicate.Outcome.FAILED
    copy = Copy.objects.get(pk=pk)
    assert "the packed form of instance" in copy.last_error
    assert "does not match its SHA-256" in copy.last_error
    assert list(replica.objects.all()) == []
