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

An attempt writes the row twice: the claim (with the key of the object it is about to
write) and the result, once the object has been read back. ``replicate_many`` keeps a few
attempts of a batch in flight at once: for small objects the time is the network's.
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


def claim(copy_id: int, now: datetime.datetime | None = None, *, attempt_key: str = "",
          seen_attempts: int | None = None) -> datetime.datetime | None:
    """Take the copy for one attempt, unless it is verified or another worker holds it:
    the lease (the attempt's token: every write of the attempt is conditional on it), or
    None.

    ``attempt_key`` is recorded in the same UPDATE (the object the attempt will write, on
    the row before its first byte is sent). With ``seen_attempts`` (the count read with the
    row) it is taken only if nobody claimed it since that read, so what was read is what
    the attempt holds: every claim counts one more attempt.
    """
    now = now or timezone.now()
    lease = now + datetime.timedelta(seconds=settings.REPLICA_LEASE_SECONDS)
    free = (Copy.objects.filter(pk=copy_id, tier=Copy.Tier.REPLICA, state__in=CLAIMABLE)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)))
    if seen_attempts is not None:
        free = free.filter(attempts=seen_attempts)
    fields: dict[str, object] = {"claimed_until": lease, "attempts": F("attempts") + 1}
    if attempt_key:
        fields["attempt_key"] = attempt_key
    return lease if free.update(**fields) == 1 else None


def backoff(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    base = float(settings.REPLICA_RETRY_SECONDS)
    return float(min(base * 2 ** max(attempts - 1, 0), settings.REPLICA_RETRY_MAX_SECONDS))


class LeaseLost(Exception):
    """The attempt outlived its lease and another worker took the copy over."""


def replicate_copy(copy_id: int, ring: KeyRing | None = None) -> Attempt:
    """One attempt at making replica copy ``copy_id`` verified.

    Three queries whatever the outcome of the transfer: the row read, the claim (which
    records the attempt's object key too) and the result (verified, or failed with its
    backoff). The row is written only once the object has been read back: a failure
    leaves its object under ``attempt_key``, which the next attempt deletes.
    """
    copy = Copy.objects.select_related("instance").filter(pk=copy_id).first()
    if copy is None:
        return Attempt(Outcome.GONE)
    if copy.state == Copy.State.VERIFIED:
        return Attempt(Outcome.ALREADY)
    key = store.object_key(uuid.uuid4().hex)
    lease = claim(copy_id, attempt_key=key, seen_attempts=copy.attempts)
    if lease is None:
        return Attempt(Outcome.BUSY)
    copy.attempts += 1
    if copy.attempt_key and copy.attempt_key != copy.key:  # a dead attempt's object, if any
        _delete_quietly(copy.attempt_key)
    try:
        attempt(copy, ring or KeyRing.from_settings(), lease, key)
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


def attempt(copy: Copy, ring: KeyRing, lease: datetime.datetime, key: str) -> None:
    """Upload the copy to ``key`` (the claim recorded it as the attempt's), read it back,
    and record it verified, all under ``lease``.

    An attempt that outlived its lease never overwrites the object of the worker that took
    over (each attempt has its own key): it deletes its own object and raises
    :class:`LeaseLost`; so does one whose copy row was deleted meanwhile.
    """
    if timezone.now() >= lease:  # the lease is the row's: no query needed to know it ran out
        raise LeaseLost(f"copy {copy.pk}'s lease ran out before its upload began")
    envelope, sent = upload(copy, ring, key)
    _read_back(copy, key, ring, envelope, sent)
    verified = timezone.now()
    recorded = _ours(copy, lease).update(
        key=key, attempt_key="", state=Copy.State.VERIFIED,
        sha256=copy.instance.sha256,  # the original's: a packed form stands for it
        size=ciphertext_size(sent.size, envelope.segment_size),
        key_id=envelope.key_id, wrapped_key=envelope.wrapped_key,
        nonce_prefix=envelope.nonce_prefix, segment_size=envelope.segment_size,
        packing=envelope.packing, written_at=verified, verified_at=verified,
        claimed_until=None, last_error="")
    if not recorded:
        store.delete(key)
        raise LeaseLost(f"copy {copy.pk} was taken over while it was uploaded and read "
                        f"back; this attempt's object is deleted")
    if copy.key and copy.key != key:  # an earlier object of the copy, never verified
        _delete_quietly(copy.key)


def upload(copy: Copy, ring: KeyRing, key: str) -> tuple[Envelope, Sent]:
    """Stream the local blob through encryption to object ``key``: (envelope, what was
    encrypted). Writes no row.

    The plaintext must hash to the instance's SHA-256: a damaged local file is not
    replicated as if it were good (its object is deleted).
    """
    instance = copy.instance
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
    return envelope, sent


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
