"""Recall: an object evicted from (or lost by) the local tier, fetched back from its verified
replica copy while it is being read.

The reader does not wait for the whole object. :class:`RecallingFile` is a seekable file
over the download: it decrypts (and unpacks, ``replica.payload``) and hashes the replica
object as it arrives, spills each
chunk to a file beside the blob's place in the local storage, and serves reads from that
file as soon as the bytes are there (a seek ahead waits only for the bytes up to it). The
last bytes are handed out only after the end of the object has been authenticated and its
SHA-256 compared with the instance's, so a reader never gets a complete-looking object that
is not the instance's; on a mismatch the spill is deleted, an ERROR is logged and the read
raises :class:`RecallFailed`. A match links the spill into place under the blob's key (the
link refuses an existing name: of two readers recalling the same object at once, both get
the right bytes and the first to finish leaves the one local file) and marks the local copy
written again.

A reader that stops early (a frame, a client gone) still completes the recall when it
closes the file, so the object is local for the next read.
"""

from __future__ import annotations

import enum
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage
from django.db import transaction
from django.utils import timezone

from imaging import blobs
from imaging.models import Instance
from portal import in_threads

from . import payload, store
from .crypto import Envelope, InvalidObject
from .keys import KeyRing
from .models import Copy

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)


class RecallFailed(OSError):
    """The replica copy could not be brought back as the instance's bytes: unreachable,
    altered, or another object. The local tier is left as it was."""


def verified_copy(key: str) -> Copy | None:
    """The verified replica copy of the instance stored under local ``key`` whose hash is
    the instance's, or None."""
    copy = (Copy.objects.select_related("instance")
            .filter(tier=Copy.Tier.REPLICA, state=Copy.State.VERIFIED,
                    instance__blob_key=key).first())
    if copy is None or copy.sha256 != copy.instance.sha256:
        return None
    return copy


def open_recalled(key: str, ring: KeyRing | None = None) -> RecallingFile | None:
    """A file that reads the object of local ``key`` from the replica while recalling it;
    None when no verified replica copy exists (called by ``imaging.blobs.open_blob``)."""
    copy = verified_copy(key)
    if copy is None:
        return None
    return RecallingFile(copy, ring)


def _envelope(copy: Copy) -> Envelope:
    assert copy.segment_size is not None
    return Envelope(key_id=copy.key_id, wrapped_key=bytes(copy.wrapped_key),
                    nonce_prefix=bytes(copy.nonce_prefix), segment_size=copy.segment_size,
                    packing=copy.packing)


class RecallingFile(io.RawIOBase):
    """A read-only, seekable view of one instance's bytes as they arrive from the replica."""

    def __init__(self, copy: Copy, ring: KeyRing | None = None) -> None:
        super().__init__()
        instance = copy.instance
        self.key = instance.blob_key
        self._instance_id = instance.pk
        self._sha256 = instance.sha256
        self._size = instance.size_bytes
        self._copy_key = copy.key
        self._pos = 0
        self._pulled = 0
        self._hash = hashlib.sha256()
        self._done = False  # the whole object arrived, was checked and kept
        self._failure: RecallFailed | None = None
        self._spill, self._spill_path = self._new_spill()
        try:
            self._body = store.get(copy.key)
            self._reader = payload.reader(self._body, ring or KeyRing.from_settings(),
                                          _envelope(copy))
        except Exception as exc:
            self._discard()
            raise self._failed(f"cannot read replica object {copy.key}: {exc}") from exc

    def _new_spill(self) -> tuple[IO[bytes], str | None]:
        """A file beside the blob's place (same file system: the link into place is
        atomic); for a storage that is not a local file system, an anonymous temporary
        file that is saved through the storage."""
        local = blobs.storage()
        if isinstance(local, FileSystemStorage):
            folder = os.path.dirname(local.path(self.key))
            os.makedirs(folder, exist_ok=True)
            spill = tempfile.NamedTemporaryFile(
                dir=folder, prefix=".recall-", suffix=".part", delete=False)
            return cast(IO[bytes], spill), spill.name
        return cast(IO[bytes], tempfile.TemporaryFile()), None

    # --- io.RawIOBase -------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        with memoryview(buffer) as raw, raw.cast("B") as view:
            want = max(0, min(len(view), self._size - self._pos))
            end = self._pos + want
            # The last bytes only once the whole object has been checked.
            self._pull(end if end < self._size else self._size + 1)
            if want == 0:
                return 0
            self._spill.seek(self._pos)
            count = self._spill.readinto(view[:want])  # type: ignore[attr-defined]
            self._pos += count
            return int(count)

    def close(self) -> None:
        """Finish the recall (a reader that stopped early leaves the object local all the
        same), then release the download and the spill."""
        if self.closed:
            return
        try:
            if self._failure is None and not self._done:
                self._pull(self._size + 1)
        except RecallFailed:
            pass  # logged where it happened; the reader is done with the file anyway
        finally:
            self._discard()
            super().close()

    # --- the download -------------------------------------------------------------------------

    def _pull(self, end: int) -> None:
        """Download until ``end`` bytes are in the spill (past the size: to the end of the
        object, checked and kept)."""
        if self._failure is not None:
            raise self._failure
        try:
            while not self._done and self._pulled < end:
                chunk = self._reader.read(blobs.CHUNK_SIZE)
                if not chunk:
                    self._finish()
                    break
                self._pulled += len(chunk)
                if self._pulled > self._size:
                    raise self._failed(f"replica object {self._copy_key} is longer than "
                                       f"instance {self._instance_id} ({self._size} bytes); "
                                       "the local copy is not kept")
                self._hash.update(chunk)
                self._spill.seek(0, io.SEEK_END)
                self._spill.write(chunk)
        except RecallFailed:
            raise
        except (InvalidObject, KeyError, OSError, *store.StoreError) as exc:
            raise self._failed(f"recall of instance {self._instance_id} from replica object "
                               f"{self._copy_key} failed: {exc}") from exc

    def _finish(self) -> None:
        digest = self._hash.hexdigest()
        if digest != self._sha256 or self._pulled != self._size:
            raise self._failed(
                f"replica object {self._copy_key} decrypts to {self._pulled} bytes with SHA-256 "
                f"{digest}, not instance {self._instance_id}'s {self._size} bytes with "
                f"{self._sha256}; the local copy is not kept")
        self._spill.flush()
        os.fsync(self._spill.fileno())
        keep(self.key, self._instance_id, self._spill, self._spill_path)
        self._done = True

    def _failed(self, reason: str) -> RecallFailed:
        log.error("%s", reason)
        self._failure = RecallFailed(reason)
        return self._failure

    def _discard(self) -> None:
        body = getattr(self, "_body", None)
        if body is not None:
            body.close()
        self._spill.close()
        if self._spill_path is not None:
            try:
                os.unlink(self._spill_path)
            except FileNotFoundError:
                pass


def keep(key: str, instance_id: int, spill: IO[bytes], spill_path: str | None) -> None:
    """Put the checked spill in place under ``key`` and mark the local copy written.

    The row is updated first, in the transaction that puts the file in place: its lock
    orders this against an eviction of the same copy (``replica.evict``), which deletes the
    file in the transaction that marks the row evicted. A file already there (another
    reader finished first) is left as it is.
    """
    local = blobs.storage()
    with transaction.atomic():
        Copy.objects.filter(instance_id=instance_id, tier=Copy.Tier.LOCAL).update(
            state=Copy.State.WRITTEN, written_at=timezone.now())
        if spill_path is not None and isinstance(local, FileSystemStorage):
            target = local.path(key)
            try:
                blobs.hard_link(spill_path, target)
            except FileExistsError:
                return
            if local.file_permissions_mode is not None:
                os.chmod(target, local.file_permissions_mode)
            return
        if local.exists(key):
            return
        spill.seek(0)
        saved = local.save(key, File(spill, name=key))
        if saved != key:  # written by another reader meanwhile: theirs is the same bytes
            local.delete(saved)


class Outcome(enum.StrEnum):
    RECALLED = "recalled"  # fetched back, checked and kept
    PRESENT = "present"  # the local object is there: nothing to do
    UNRECOVERABLE = "unrecoverable"  # missing locally and no verified replica copy
    FAILED = "failed"  # the replica copy could not be read back as the instance's bytes


def recall_instance(instance: Instance, ring: KeyRing | None = None) -> Outcome:
    """Bring one instance's object back to the local tier unless it is there: the recall a
    read does, read to its end with nobody waiting (restore, priors). Safe to run twice."""
    if blobs.storage().exists(instance.blob_key):
        return Outcome.PRESENT
    copy = verified_copy(instance.blob_key)
    if copy is None:
        return Outcome.UNRECOVERABLE
    try:
        recalling = RecallingFile(copy, ring)
    except RecallFailed:
        return Outcome.FAILED
    try:
        recalling.seek(0, io.SEEK_END)
        recalling.read(1)  # the end: everything pulled, checked and kept
    except RecallFailed:
        return Outcome.FAILED
    finally:
        recalling.close()
    return Outcome.RECALLED


def recall_many(instance_ids: Sequence[int], ring: KeyRing | None = None,
                concurrency: int | None = None) -> Iterator[tuple[int, Outcome]]:
    """:func:`recall_instance` for each instance, ``RECALL_CONCURRENCY`` at once
    (``portal.in_threads``: a recall waits on the replica far more than it computes),
    yielding (id, outcome) as each ends."""
    ring = ring or KeyRing.from_settings()

    def one(pk: int) -> tuple[int, Outcome]:
        instance = Instance.all_objects.filter(pk=pk).first()
        return pk, Outcome.UNRECOVERABLE if instance is None else recall_instance(instance, ring)

    yield from in_threads.each(one, instance_ids, concurrency or settings.RECALL_CONCURRENCY,
                               name="recall", ordered=False)


def evicted_instances(**filters: Any) -> Any:
    """Instances whose local copy is marked evicted (``filters`` narrow them)."""
    return Instance.all_objects.filter(copies__tier=Copy.Tier.LOCAL,
                                   copies__state=Copy.State.EVICTED, **filters)
