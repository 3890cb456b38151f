"""DICOM blobs in the ``dicom`` storage, under opaque keys.

Keys are random UUIDs fanned out over two directory levels; the index row is what ties a
key to a patient or UID. Local disk by default, any S3-compatible store via django-storages.
"""

import hashlib
import itertools
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

CHUNK_SIZE = 1024 * 1024


def storage() -> Storage:
    return storages["dicom"]


FOLDERS = 4096  # one level: small folders at 10^7 files
KEYS_PER_FOLDER_TURN = 64


class _FolderTurn:
    """Which folder new keys go to: the same one for :data:`KEYS_PER_FOLDER_TURN` keys, then
    the next, from a random start in each process.

    Over time every folder gets its share, as with a random folder per key; but a series
    arriving in a young archive creates a folder per 64 objects instead of one per object
    (creating a directory costs a third of a millisecond on this kind of disk, a tenth of
    what storing the object costs), and its files sit together on disk.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._counter = itertools.count()

    def next(self) -> str:
        with self._lock:
            if self._pid != os.getpid():  # a new process (the listener forks its workers)
                self._pid = os.getpid()
                self._counter = itertools.count(uuid.uuid4().int % FOLDERS * KEYS_PER_FOLDER_TURN)
            turn = next(self._counter) // KEYS_PER_FOLDER_TURN
        return f"{turn % FOLDERS:03x}"


_folders = _FolderTurn()


def new_key() -> str:
    """A fresh, unguessable key: ``<folder>/<random UUID>.dcm``."""
    return f"{_folders.next()}/{uuid.uuid4().hex}.dcm"


class _HashingReader:
    """A read-only view of a seekable file that hashes each byte the first time it is read.

    Storage backends read the file once, front to back, while they write it; hashing on the
    way saves a second pass. A backend that seeks back and reads again (a retried upload)
    does not hash anything twice, and one that skips ahead leaves a gap that ``finish``
    notices.
    """

    def __init__(self, fp: IO[bytes]) -> None:
        self._fp = fp
        self._hash = hashlib.sha256()
        self._hashed = 0

    def read(self, size: int | None = -1) -> bytes:
        start = self._fp.tell()
        data = self._fp.read(-1 if size is None else size)
        end = start + len(data)
        if start <= self._hashed < end:
            self._hash.update(data[self._hashed - start :])
            self._hashed = end
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._fp.closed

    def close(self) -> None:
        """The caller owns ``fp``; storage backends must not close it."""

    def finish(self) -> tuple[str, int]:
        size = self._fp.seek(0, 2)
        if self._hashed != size:  # the backend skipped bytes: hash what is left
            self._fp.seek(self._hashed)
            while chunk := self._fp.read(CHUNK_SIZE):
                self._hash.update(chunk)
            self._hashed = size
        return self._hash.hexdigest(), size


def write(fp: IO[bytes], key: str, *, adopt: Path | None = None,
          checksum: bool = True) -> tuple[str | None, int]:
    """Write ``fp`` from its start under ``key``, streaming, and hash it on the way.

    Returns the SHA-256 (hex) and size of what was written. If the write fails, whatever
    part of the blob reached the storage is deleted again. ``adopt``: ``fp`` is this local
    file, which the caller gives up; a storage on the same local file system takes the file
    itself (a hard link) instead of a copy. ``checksum=False``: the caller hashes the file
    later; an adopted file is then not read at all, and its SHA-256 is returned as None.
    """
    if adopt is not None:
        taken = _adopt(fp, adopt, key, checksum=checksum)
        if taken is not None:
            return taken
    fp.seek(0)
    reader = _HashingReader(fp)
    try:
        saved = storage().save(key, File(reader, name=key))  # type: ignore[arg-type]
    except BaseException:
        _delete_quietly(key)
        raise
    if saved != key:  # a UUID collision would be a bug, never silently renamed
        storage().delete(saved)
        raise RuntimeError(f"storage renamed blob {key!r} to {saved!r}")
    return reader.finish()


def _adopt(fp: IO[bytes], path: Path, key: str, *, checksum: bool = True,
           ) -> tuple[str | None, int] | None:
    """Link ``path`` into a local storage under ``key``; None where that cannot be done.

    The DICOM listener receives each object into a file first; on this kind of machine
    writing half a megabyte to the page cache takes over a millisecond, so storing the
    received file itself instead of a second copy is the larger part of the blob's cost.
    """
    store = storage()
    if not isinstance(store, FileSystemStorage):
        return None
    target = store.path(key)
    try:
        hard_link(path, target)  # refuses an existing name, like the storage's O_EXCL
    except OSError:
        return None  # another file system, or links not supported: copy instead
    try:
        if store.file_permissions_mode is not None:
            os.chmod(target, store.file_permissions_mode)
        return sha256(fp) if checksum else (None, os.fstat(fp.fileno()).st_size)
    except BaseException:
        Path(target).unlink(missing_ok=True)
        raise


def hard_link(source: str | Path, target: str | Path) -> None:
    """Link ``source`` as ``target``, creating ``target``'s folder only when it is new (the
    usual folder exists: linking first saves a system call per file). Raises OSError as
    ``os.link`` does: an existing target, another file system, no links."""
    try:
        os.link(source, target)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.link(source, target)


def sha256(fp: IO[bytes]) -> tuple[str, int]:
    """SHA-256 (hex) and size of ``fp`` from its start, read in chunks."""
    fp.seek(0)
    h = hashlib.sha256()
    size = 0
    while chunk := fp.read(CHUNK_SIZE):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def _delete_quietly(key: str) -> None:
    try:
        if storage().exists(key):
            storage().delete(key)
    except Exception:  # noqa: S110 - the original error matters more than this one
        pass


def delete(key: str) -> None:
    storage().delete(key)


def open_blob(key: str, *, recall: bool = True) -> IO[bytes]:
    """The blob, for reading. One evicted from (or lost by) the local tier is read from its
    verified replica copy while it is recalled (``replica.recall``), when a replica is
    configured; imported only then, so without one nothing here knows of the replica.
    ``recall=False`` reads the local tier only (fixity: a lost file is damage to report,
    not a miss to hide)."""
    try:
        return storage().open(key, "rb")
    except FileNotFoundError:
        if not (recall and settings.REPLICA_URL):
            raise
        from replica.recall import open_recalled

        recalled = open_recalled(key)
        if recalled is None:
            raise
        return cast(IO[bytes], recalled)


def iter_chunks(key: str, chunk_size: int = CHUNK_SIZE, *,
                recall: bool = True) -> Iterator[bytes]:
    with open_blob(key, recall=recall) as fp:
        while chunk := fp.read(chunk_size):
            yield chunk
