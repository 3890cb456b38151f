"""What each tier holds, read without the database: the objects of the local ``dicom``
storage and of the replica bucket, and a replica object brought back as plaintext.

Recovery (``replica.rebuild``) and reconciliation (``replica.reconcile``) start from these
listings, so they must work when the index is gone: a replica object's envelope is read
from its own S3 metadata, never from a copy row. The quarantine prefix is skipped in both
tiers: what reconciliation set aside is not listed again as an orphan.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings
from django.utils import timezone

from imaging import blobs

from . import payload, store
from .crypto import Envelope
from .keys import KeyRing


def quarantine_prefix() -> str:
    return str(settings.RECONCILE_QUARANTINE_PREFIX)


def local_keys() -> Iterator[str]:
    """Every key in the ``dicom`` storage, folder by folder (any backend that can list:
    local disk or S3), except the quarantine folder."""
    storage = blobs.storage()
    skip = quarantine_prefix().rstrip("/")
    folders = [""]
    while folders:
        folder = folders.pop()
        try:
            subfolders, files = storage.listdir(folder)
        except FileNotFoundError:  # an empty local storage has no folder yet
            continue
        for name in sorted(files):
            yield f"{folder}/{name}" if folder else name
        for name in sorted(subfolders, reverse=True):
            path = f"{folder}/{name}" if folder else name
            if path != skip:
                folders.append(path)


def awaiting_deletion() -> set[str]:
    """Local keys of purged patients' files still to be deleted (``privacy.retention``):
    neither orphans to keep nor objects to index again."""
    from privacy.models import PendingBlobDeletion
    from privacy.retention import DICOM_STORAGE

    return set(PendingBlobDeletion.objects.filter(storage=DICOM_STORAGE)
               .values_list("key", flat=True).iterator())


def purged_studies() -> dict[str, int]:
    """Study Instance UIDs of purged patients (their tombstones, while the database has
    them) -> the tombstone's id: a rebuild must not bring an erased patient back."""
    from privacy.models import Tombstone

    return {study["uid"]: pk for pk, studies in Tombstone.objects.values_list("pk", "studies")
            for study in studies if isinstance(study, dict) and study.get("uid")}


def local_age(key: str, now: datetime.datetime | None = None) -> float:
    """Seconds since the local object was last written."""
    modified = blobs.storage().get_modified_time(key)
    if timezone.is_naive(modified):
        modified = timezone.make_aware(modified, datetime.UTC)
    return ((now or timezone.now()) - modified).total_seconds()


@dataclass(frozen=True)
class ReplicaObject:
    key: str  # the whole key, prefix included (as on a copy row)
    size: int
    modified: datetime.datetime

    def age(self, now: datetime.datetime | None = None) -> float:
        return ((now or timezone.now()) - self.modified).total_seconds()


def replica_objects() -> Iterator[ReplicaObject]:
    """Every instance object under ``REPLICA_PREFIX``, page by page: not the quarantine
    prefix, nor the database backups (``replica.database_backup``), which no copy row
    refers to and which are not DICOM."""
    from replica.database_backup import replica_prefix

    skip = (quarantine_prefix(), replica_prefix())
    pages = store.client().get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket(), Prefix=store.object_key(""))
    for page in pages:
        for item in page.get("Contents", []):
            if not item["Key"].startswith(skip):
                yield ReplicaObject(item["Key"], item["Size"], item["LastModified"])


def replica_envelope(key: str) -> Envelope:
    """The envelope in the object's own metadata (``crypto.InvalidObject`` if it has none
    or a malformed one; ``LookupError`` if there is no such object)."""
    found = store.head(key)
    if found is None:
        raise LookupError(f"no replica object {key}")
    return Envelope.from_metadata(found["metadata"])


@dataclass(frozen=True)
class Plaintext:
    """A replica object decrypted into a local temporary file, read to a clean end."""

    path: Path
    sha256: str
    size: int

    def open(self) -> IO[bytes]:
        return self.path.open("rb")


@contextlib.contextmanager
def decrypted(key: str, envelope: Envelope, ring: KeyRing) -> Iterator[Plaintext]:
    """Download and decrypt the replica object ``key`` into a temporary file in the spool
    folder, streaming; the file is removed when the block ends.

    Raises ``crypto.InvalidObject`` (altered, truncated, wrong envelope) or ``KeyError``
    (its key id is not in the ring) before the block runs: nothing unauthenticated is ever
    handed over.
    """
    spool = Path(settings.DICOM_SPOOL_DIR)
    spool.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="replica-", suffix=".dcm", dir=spool)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            body = store.get(key)
            try:
                reader = payload.reader(body, ring, envelope)
                while chunk := reader.read(blobs.CHUNK_SIZE):
                    out.write(chunk)
            finally:
                body.close()
        yield Plaintext(path, reader.plaintext_sha256, reader.plaintext_size)
    finally:
        path.unlink(missing_ok=True)
