"""Replication of one copy: claim it, stream the local blob (packed, with
``REPLICA_PACKING``: ``replica.payload``) through encryption to the replica, read it back,
decrypt it and find it hashing to what was encrypted, and only then call it verified. A
packed form is proven to unpack to the original before it is encrypted, so the read back
does not unpack it again.

A copy is claimed with a conditional UPDATE that sets a lease (``claimed_until``), so two
workers never upload the same copy at once; a worker that dies leaves the lease to expire
and the backlog drain to retry. A failure is recorded on the row (``last_error``) with the
earliest next attempt in ``claimed_until`` (exponential backoff), so a replica outage
leaves a backlog, never a gap. Running it again on a verified copy does nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from imaging import blobs
from portal import in_threads

from . import payload, store
from .crypto import DecryptingReader, EncryptingReader, Envelope, ciphertext_size, new_envelope
from .keys import KeyRing
from .models import Copy

log = logging.getLogger(__name__)

CLAIMABLE = (Copy.State.PENDING, Copy.State.WRITTEN, Copy.State.FAILED)


class Outcome(enum.StrEnum):
    VERIFIED = "verified"  # written, read back and found identical now
    ALREADY = "already"  # verified before: nothing done
    BUSY = "busy"  # another worker holds it, or its retry wait has not passed
    FAILED = "failed"  # recorded on the row; try again after ``retry_in`` seconds
    GONE = "gone"  # no such copy (its instance was deleted)


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    retry_in: float | None = None
    error: str = ""


class Mismatch(Exception):
    """What was written or read back is not the instance's bytes."""


def claim(copy_id: int, now: datetime.datetime | None = None) -> datetime.datetime | None:
    """Take the copy for one attempt, unless it is verified or another worker holds it:
    the lease (the attempt's token: every write of the attempt is conditional on it), or
    None."""
    now = now or timezone.now()
    lease = now + datetime.timedelta(seconds=settings.REPLICA_LEASE_SECONDS)
    taken = (Copy.objects.filter(pk=copy_id, tier=Copy.Tier.REPLICA, state__in=CLAIMABLE)
             .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
             .update(claimed_until=lease, attempts=F("attempts") + 1))
    return lease if taken == 1 else None


def backoff(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    base = float(settings.REPLICA_RETRY_SECONDS)
    return float(min(base * 2 ** max(attempts - 1, 0), settings.REPLICA_RETRY_MAX_SECONDS))


class LeaseLost(Exception):
    """The attempt outlived its lease and another worker took the copy over."""


def replicate_copy(copy_id: int, ring: KeyRing | None = None) -> Attempt:
    """One attempt at making replica copy ``copy_id`` verified."""
    lease = claim(copy_id)
    if lease is None:
        state = Copy.objects.filter(pk=copy_id).values_list("state", flat=True).first()
        if state is None:
            return Attempt(Outcome.GONE)
        return Attempt(Outcome.ALREADY if state == Copy.State.VERIFIED else Outcome.BUSY)
    copy = Copy.objects.select_related("instance").get(pk=copy_id)
    try:
        ring = ring or KeyRing.from_settings()
        key, envelope, sent = upload(copy, ring, lease)
        _read_back(copy, key, ring, envelope, sent)
        if not _ours(copy, lease).update(state=Copy.State.VERIFIED, verified_at=timezone.now(),
                                         claimed_until=None, last_error=""):
            raise LeaseLost(f"copy {copy.pk} was taken over before it was verified")
    except LeaseLost as exc:
        log.warning("%s", exc)
        return Attempt(Outcome.BUSY, error=str(exc))
    except Exception as exc:
        return _failed(copy, lease, exc)
    return Attempt(Outcome.VERIFIED)


def replicate_many(copy_ids: Sequence[int], concurrency: int | None = None
                   ) -> list[tuple[int, Attempt]]:
    """One attempt for each copy, ``REPLICA_CONCURRENCY`` of them in flight at once
    (``portal.in_threads``): a small object's upload and read back are mostly waiting on
    the network, so a worker keeps several going."""
    ring = KeyRing.from_settings()
    return list(in_threads.each(lambda pk: (pk, replicate_copy(pk, ring)), copy_ids,
                                concurrency or settings.REPLICA_CONCURRENCY,
                                name="replicate"))


def _ours(copy: Copy, lease: datetime.datetime) -> QuerySet[Copy]:
    return Copy.objects.filter(pk=copy.pk, claimed_until=lease)


@dataclass(frozen=True)
class Sent:
    """The plaintext an attempt encrypted: the original, or a packed form proven (as it was
    packed) to unpack to it, with its hash and size."""

    sha256: str
    size: int


def upload(copy: Copy, ring: KeyRing, lease: datetime.datetime
           ) -> tuple[str, Envelope, Sent]:
    """Stream the local blob through encryption to a fresh object key of this attempt, and
    record it on the copy while the lease is ours: (key, envelope, what was encrypted).

    A fresh key per attempt means an attempt that outlived its lease never overwrites the
    object of the worker that took over; its own object is deleted instead. The key is on
    the row before the upload starts, so an object a killed worker uploaded but never
    recorded is deleted by the attempt that takes over, not left for reconciliation. The
    plaintext must hash to the instance's SHA-256: a damaged local file is not replicated
    as if it were good.
    """
    instance = copy.instance
    key = store.object_key(uuid.uuid4().hex)
    if not _ours(copy, lease).update(attempt_key=key):
        raise LeaseLost(f"copy {copy.pk} was taken over before its upload began")
    if copy.attempt_key and copy.attempt_key != copy.key:  # a dead attempt's object, if any
        _delete_quietly(copy.attempt_key)
    envelope, dek = new_envelope(ring)
    with blobs.open_blob(instance.blob_key) as fp, \
            payload.for_upload(fp, instance.sha256) as plain:
        # A packed form was hashed against the instance's SHA-256 as it was packed, and
        # unpacked to it again (payload.for_upload), its own hash taken as it was; what is
        # encrypted is hashed here against that, or against the instance's.
        envelope = dataclasses.replace(envelope, packing=plain.packing)
        reader = EncryptingReader(cast(BinaryIO, plain.stream), dek, envelope)
        plain_size = plain.size if plain.packing else instance.size_bytes
        try:
            store.put(key, cast(IO[bytes], reader), envelope.to_metadata(),
                      size=ciphertext_size(plain_size, envelope.segment_size))
        except store.SizeMismatch as exc:  # nothing was uploaded
            raise Mismatch(f"the local file of instance {instance.pk} is not its "
                           f"{instance.size_bytes} bytes on record ({exc})") from exc
        sent = Sent(reader.plaintext_sha256, reader.plaintext_size)
        expected = plain.sha256 if plain.packing else instance.sha256
    if sent.sha256 != expected:
        store.delete(key)
        what = "packed form" if plain.packing else "local file"
        raise Mismatch(f"the {what} of instance {instance.pk} does not match its "
                       f"SHA-256 ({sent.sha256} read, {expected} expected)")
    # The copy row records the original's hash: a packed form stands for it.
    written, size = instance.sha256, sent.size
    recorded = _ours(copy, lease).update(
        key=key, attempt_key="", state=Copy.State.WRITTEN, sha256=written,
        size=ciphertext_size(size, envelope.segment_size),
        key_id=envelope.key_id, wrapped_key=envelope.wrapped_key,
        nonce_prefix=envelope.nonce_prefix, segment_size=envelope.segment_size,
        packing=envelope.packing, written_at=timezone.now())
    if not recorded:
        store.delete(key)
        raise LeaseLost(f"copy {copy.pk} was taken over while it was uploaded; "
                        f"this attempt's object is deleted")
    if copy.key and copy.key != key:  # an earlier attempt's object, never verified
        _delete_quietly(copy.key)
    return key, envelope, sent


def _delete_quietly(key: str) -> None:
    try:
        store.delete(key)
    except store.StoreError as exc:  # an orphan for reconciliation, not a failed copy
        log.warning("could not delete replica object %s of an earlier attempt: %s", key, exc)


def _read_back(copy: Copy, key: str, ring: KeyRing, envelope: Envelope, sent: Sent) -> None:
    """Download and decrypt the object, hashing it on the way: authenticated decryption
    refuses any altered segment, and the hash proves it is exactly what was encrypted, the
    instance's bytes or a packed form already proven to unpack to them (so it is not
    unpacked again here: a JPEG-LS decode per frame would double the attempt's CPU)."""
    digest = hashlib.sha256()
    size = 0
    body = store.get(key)
    try:
        reader = DecryptingReader(cast(BinaryIO, body), ring, envelope)
        while chunk := reader.read(blobs.CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    if digest.hexdigest() != sent.sha256 or size != sent.size:
        what = "its packed form" if envelope.packing else f"instance {copy.instance_id}"
        raise Mismatch(f"replica object {key} read back as {size} bytes with SHA-256 "
                       f"{digest.hexdigest()}, not the {sent.size} bytes of {what} with "
                       f"{sent.sha256}")


def _failed(copy: Copy, lease: datetime.datetime, exc: Exception) -> Attempt:
    attempts = copy.attempts  # read after the claim counted this attempt
    wait = backoff(attempts)
    error = f"{type(exc).__name__}: {exc}"[:2000]
    _ours(copy, lease).update(
        state=Copy.State.FAILED, last_error=error,
        claimed_until=timezone.now() + datetime.timedelta(seconds=wait))
    level = logging.ERROR if isinstance(exc, Mismatch) else logging.WARNING
    log.log(level, "replication of copy %s (instance %s) failed, attempt %d, next in %.0fs: %s",
            copy.pk, copy.instance_id, attempts, wait, error)
    return Attempt(Outcome.FAILED, retry_in=wait, error=error)
