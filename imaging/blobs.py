"""DICOM blobs in the ``dicom`` storage, under opaque keys.

Keys are random UUIDs fanned out over two directory levels; the index row is what ties a
key to a patient or UID. Local disk by default, any S3-compatible store via django-storages.
"""

import uuid
from collections.abc import Iterator
from typing import IO

from django.core.files import File
from django.core.files.storage import Storage, storages

CHUNK_SIZE = 1024 * 1024


def storage() -> Storage:
    return storages["dicom"]


def new_key() -> str:
    hexkey = uuid.uuid4().hex
    return f"{hexkey[:2]}/{hexkey[2:4]}/{hexkey}.dcm"


def write(fp: IO[bytes], key: str) -> str:
    """Write ``fp`` from its start under ``key``, streaming; returns the stored key."""
    fp.seek(0)
    saved = storage().save(key, File(fp, name=key))
    if saved != key:  # a UUID collision would be a bug, never silently renamed
        storage().delete(saved)
        raise RuntimeError(f"storage renamed blob {key!r} to {saved!r}")
    return saved


def delete(key: str) -> None:
    storage().delete(key)


def open_blob(key: str) -> IO[bytes]:
    return storage().open(key, "rb")


def iter_chunks(key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    with open_blob(key) as fp:
        while chunk := fp.read(chunk_size):
            yield chunk
