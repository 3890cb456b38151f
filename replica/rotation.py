"""Key rotation: every replica object's data key re-wrapped under ``REPLICA_CURRENT_KEY``,
without uploading a payload again, and the check that an old key may be retired.

Only the envelope changes (``replica.crypto.rewrap``): the object is copied onto itself with
its new metadata (S3's server-side copy, multipart past 5 GB through boto3's managed copy;
no payload byte passes through this process), read back and decrypted with the new
envelope, and only then recorded on the copy row, conditional on the row still describing
that object. Interrupted anywhere, nothing is lost: the old and the new wrapped key open the
same data key, and the next run finishes what is left (an object whose metadata is already
under the current key only has its row brought up to date).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from django.db.models import QuerySet

from imaging.fixity import StorageUnavailable

from . import store
from .crypto import META_KEY_ID, Envelope, InvalidObject, rewrap
from .keys import KeyRing
from .models import Copy
from .readback import envelope_of, read_replica


class Outcome(enum.StrEnum):
    ROTATED = "rotated"  # now under the current key, proven by decryption
    ALREADY = "already"  # it was under the current key: nothing done
    MISSING = "missing"  # no object under the copy's key: fixity's to repair
    CHANGED = "changed"  # replication wrote another object meanwhile (under the current key)
    FAILED = "failed"  # see the error; the copy keeps a working envelope


@dataclass(frozen=True)
class Rotation:
    copy_id: int
    outcome: Outcome
    error: str = ""


def pending(ring: KeyRing) -> QuerySet[Copy]:
    """Replica copies with an object whose data key is not under the current key."""
    return (Copy.objects.filter(tier=Copy.Tier.REPLICA).exclude(key="").exclude(key_id="")
            .exclude(key_id=ring.current_id))


def batches(ring: KeyRing, size: int) -> Iterator[list[int]]:
    """The pending copies' ids, ``size`` at a time, by id (each batch queried afresh)."""
    last = 0
    while True:
        ids = list(pending(ring).filter(pk__gt=last).order_by("pk")
                   .values_list("pk", flat=True)[:size])
        if not ids:
            return
        yield ids
        last = ids[-1]


def rotate_copy(copy_id: int, ring: KeyRing) -> Rotation:
    copy = Copy.objects.select_related("instance").filter(pk=copy_id).first()
    if copy is None or not copy.key:
        return Rotation(copy_id, Outcome.CHANGED)
    if copy.key_id == ring.current_id:
        return Rotation(copy_id, Outcome.ALREADY)
    try:
        old = envelope_of(copy)
        found = store.head(copy.key)
        if found is None:
            return Rotation(copy_id, Outcome.MISSING, f"no object {copy.key} in the replica")
        own = Envelope.from_metadata(found["metadata"])
        if (own.key_id == ring.current_id and own.nonce_prefix == old.nonce_prefix
                and own.segment_size == old.segment_size):
            new = own  # an earlier run rewrote the object and stopped before the row
        else:
            new = rewrap(old, ring)
            replace_metadata(copy.key, new.to_metadata())
        problem = read_replica(copy, ring, envelope=new)
    except (KeyError, ValueError, InvalidObject, StorageUnavailable, *store.StoreError) as exc:
        return Rotation(copy_id, Outcome.FAILED, f"{type(exc).__name__}: {exc}")
    if problem is not None:
        return Rotation(copy_id, Outcome.FAILED, f"does not read back under the new envelope: "
                        f"{problem.reason} (verify_fixity repairs a damaged copy)")
    recorded = Copy.objects.filter(pk=copy.pk, key=copy.key, key_id=old.key_id).update(
        key_id=new.key_id, wrapped_key=new.wrapped_key)
    return Rotation(copy_id, Outcome.ROTATED if recorded else Outcome.CHANGED)


def replace_metadata(key: str, metadata: dict[str, str]) -> None:
    """Copy the object onto itself with new user metadata, server-side. boto3's managed
    copy uses CopyObject up to its threshold and a multipart copy (UploadPartCopy) above
    it, which also covers objects past CopyObject's 5 GB limit."""
    bucket = store.bucket()
    store.client().copy({"Bucket": bucket, "Key": key}, bucket, key,
                        ExtraArgs={"Metadata": metadata, "MetadataDirective": "REPLACE"},
                        Config=store.TRANSFER)


@dataclass(frozen=True)
class Retirement:
    rows: int  # copy rows whose envelope is under the key
    objects: list[str]  # objects whose metadata is (the first few)
    objects_count: int


def still_using(key_id: str) -> Retirement:
    """What still refers to ``key_id``: copy rows, and objects in the bucket by their own
    metadata (every object under the replica prefix is looked at: the bucket, not the
    database, is what a restore reads)."""
    rows = Copy.objects.filter(tier=Copy.Tier.REPLICA, key_id=key_id).count()
    found: list[str] = []
    count = 0
    for key in store.keys():
        head = store.head(key)
        meta = {k.lower(): v for k, v in (head or {}).get("metadata", {}).items()}
        if meta.get(META_KEY_ID) == key_id:
            count += 1
            if len(found) < 10:
                found.append(key)
    return Retirement(rows, found, count)
