"""Reading a copy back and proving it holds the instance's bytes, for fixity and repair.

A replica object is proven only by downloading it, decrypting (and unpacking) it with its
copy row's envelope and hashing the original bytes; its S3 metadata must also open it,
since a restore from the bucket alone has nothing else. What cannot be read *now* (the
replica or the storage unreachable) is :class:`~imaging.fixity.StorageUnavailable`, never
damage: an outage must not raise alerts or start repairs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import IO

from botocore.exceptions import ClientError

from imaging import blobs
from imaging.fixity import StorageUnavailable
from imaging.models import Instance

from . import payload, store
from .crypto import Envelope, InvalidObject, _unwrap
from .keys import KeyRing
from .models import Copy, IntegrityAlert

Kind = IntegrityAlert.Kind


@dataclass(frozen=True)
class Problem:
    """What is wrong with one copy."""

    kind: IntegrityAlert.Kind
    reason: str


def envelope_of(copy: Copy) -> Envelope:
    """The envelope recorded on a replica copy row."""
    return Envelope(key_id=copy.key_id, wrapped_key=bytes(copy.wrapped_key),
                    nonce_prefix=bytes(copy.nonce_prefix), segment_size=int(copy.segment_size or 0),
                    packing=copy.packing)


def read_replica(copy: Copy, ring: KeyRing, sink: IO[bytes] | None = None,
                 envelope: Envelope | None = None) -> Problem | None:
    """Download, decrypt and hash replica ``copy`` (writing the plaintext to ``sink`` if
    given): None if it is the instance's bytes and its metadata opens it too.

    ``envelope`` replaces the row's (a rotation proves its new envelope before recording
    it). Raises :class:`StorageUnavailable` if the replica cannot be reached.
    """
    instance = copy.instance
    try:
        envelope = envelope or envelope_of(copy)
    except ValueError as exc:
        return Problem(Kind.UNDECRYPTABLE, f"the copy row's envelope is malformed: {exc}")
    try:
        found = store.head(copy.key) if copy.key else None
    except store.StoreError as exc:
        raise StorageUnavailable(f"cannot reach the replica for {copy.key}: {exc}") from exc
    if found is None:
        return Problem(Kind.MISSING, f"replica object {copy.key or '(no key)'} is missing")
    problem = _metadata_problem(found["metadata"], envelope, ring)
    if problem is not None:
        return problem
    digest = hashlib.sha256()
    size = 0
    try:
        body = store.get(copy.key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return Problem(Kind.MISSING, f"replica object {copy.key} is missing")
        raise StorageUnavailable(f"cannot read replica object {copy.key}: {exc}") from exc
    except store.StoreError as exc:
        raise StorageUnavailable(f"cannot read replica object {copy.key}: {exc}") from exc
    try:
        try:
            reader = payload.reader(body, ring, envelope)
        except KeyError as exc:
            return Problem(Kind.UNDECRYPTABLE, str(exc.args[0]))
        except InvalidObject as exc:
            return Problem(Kind.UNDECRYPTABLE, str(exc))
        while chunk := reader.read(blobs.CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
            if sink is not None:
                sink.write(chunk)
    except InvalidObject as exc:
        return Problem(Kind.MISMATCH, f"replica object {copy.key}: {exc}")
    except store.StoreError as exc:
        raise StorageUnavailable(f"cannot read replica object {copy.key}: {exc}") from exc
    finally:
        body.close()
    return _content_problem(f"replica object {copy.key}", digest.hexdigest(), size, instance)


def _metadata_problem(meta: dict[str, str], envelope: Envelope,
                      ring: KeyRing) -> Problem | None:
    """The object's own envelope must open it: the same data key, nonce prefix and segment
    size as the row's (its key id may differ while a rotation is under way)."""
    try:
        own = Envelope.from_metadata(meta)
    except InvalidObject as exc:
        return Problem(Kind.UNDECRYPTABLE, f"the object's metadata envelope: {exc}")
    if own == envelope:
        return None
    try:
        same_key = _unwrap(own, ring) == _unwrap(envelope, ring)
    except KeyError as exc:
        return Problem(Kind.UNDECRYPTABLE, str(exc.args[0]))
    except InvalidObject as exc:
        return Problem(Kind.UNDECRYPTABLE, f"the object's metadata envelope: {exc}")
    if (not same_key or own.nonce_prefix != envelope.nonce_prefix
            or own.segment_size != envelope.segment_size or own.packing != envelope.packing):
        return Problem(Kind.UNDECRYPTABLE, "the envelope in the object's metadata does not "
                       "match its copy row: a restore from the bucket could not read it")
    return None


def read_local(instance: Instance) -> Problem | None:
    """Re-hash the instance's local blob: None if it still has its bytes.

    Raises :class:`StorageUnavailable` if the storage cannot be read now.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in blobs.iter_chunks(instance.blob_key):
            digest.update(chunk)
            size += len(chunk)
    except FileNotFoundError:
        return Problem(Kind.MISSING, "the stored file is missing")
    except (OSError, *store.StoreError) as exc:  # a network file system, S3 storage
        raise StorageUnavailable(f"cannot read {instance.blob_key}: {exc}") from exc
    return _content_problem(f"the stored file {instance.blob_key}", digest.hexdigest(), size,
                            instance)


def _content_problem(what: str, digest: str, size: int, instance: Instance) -> Problem | None:
    if digest == instance.sha256 and size == instance.size_bytes:
        return None
    return Problem(Kind.MISMATCH, f"{what}: content changed: SHA-256 {digest} ({size} bytes), "
                   f"expected {instance.sha256} ({instance.size_bytes} bytes)")
