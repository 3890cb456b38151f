"""Received objects are indexed behind the answer, from a spool that survives a crash.

A modality sends a series one C-STORE at a time and waits for each answer. The answer
needs the object checked, checksummed and held on disk, not its index rows: those are
written by a thread of the association (:class:`BackgroundIndex`) while the next object
is on the wire, many to a transaction when they queue up. On PostgreSQL that is one WAL
flush per batch instead of one per object.

What makes the early answer safe:

* the object is staged first (``imaging.ingest.stage``): parsed, checked, compared with
  what is stored and with what this association has staged, written as the blob. A
  refusal, a duplicate or a conflict is answered as before. Its SHA-256 is computed by
  the index thread, on the other core while the next object arrives (hashing does not
  hold the interpreter lock), and before its rows are written;
* before the answer, the received file is also linked into this process's spool folder
  (``DICOM_SPOOL_DIR/<pid>``); it leaves the spool when its rows are committed. A listener
  stopped in between (killed, power cut) leaves it there, and :func:`recover` indexes it
  through the one ingest path when the listener starts again, or, for a worker process
  that died, when the listener replaces it;
* each object's STORE audit entry is written in the transaction of its index rows: a
  process killed at any point leaves no indexed object off the trail (recovery writes the
  entries of what it indexes the same way);
* the association's release is answered only after everything it sent is indexed, so a
  sender that has finished finds its objects, and a query or retrieve on the same
  association waits for them too;
* an object answered for that then cannot be indexed (another peer stored a different
  object under its UID in between) is set aside in ``DICOM_SPOOL_DIR/unindexed``, with an
  error in the log and on the audit trail: nothing accepted is ever deleted.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

from django.conf import settings
from django.db import close_old_connections, connections

from audit.models import AuditAction, Outcome
from audit.trail import Actor, Target, record
from imaging import blobs
from imaging.ingest import IngestResult, Staged, checksummed, index, stage
from imaging.ingest import Outcome as IngestOutcome
from imaging.models import Instance
from imaging.principals import Principal
from imaging.store_audit import StoreAudit

log = logging.getLogger(__name__)

UNINDEXED = "unindexed"
IDLE_EXIT = 1.0  # seconds an index thread waits for more work before it ends
# An index thread lets objects gather for up to BATCH_WAIT seconds (or BATCH_MAX objects)
# and writes them in one transaction: a series arriving at 200 objects a second is indexed
# ten at a time, for a tenth of the queries, commits and interpreter time per object. A
# release, a query or a retrieve on the association does not wait for the batch to fill.
BATCH_WAIT = 0.05
BATCH_MAX = 64


def spool_root() -> Path:
    return Path(settings.DICOM_SPOOL_DIR)


def _spool_name(calling_ae: str, key: str) -> str:
    """``<calling AE>__<blob key>``: what recovery needs to index the file as it came."""
    return f"{quote(calling_ae, safe='')}__{key.replace('/', '_')}"


def _parse_spool_name(name: str) -> tuple[str, str]:
    ae, _, flat = name.partition("__")
    folder, _, rest = flat.partition("_")
    return unquote(ae), f"{folder}/{rest}"


def spool(received: Path, calling_ae: str, key: str) -> Path:
    """Keep the received file in this process's spool until its index rows are written."""
    folder = spool_root() / str(os.getpid())
    target = folder / _spool_name(calling_ae, key)
    try:
        blobs.hard_link(received, target)
    except OSError:  # another file system: a copy
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(received, target)
    return target


def set_aside(spooled: Path) -> Path:
    """Move a spooled object that could not be indexed where an administrator finds it."""
    folder = spool_root() / UNINDEXED
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / spooled.name
    os.replace(spooled, kept)
    return kept


class BackgroundIndex:
    """The index rows of one association's staged objects, written by a thread of its own.

    Objects stored are on the audit trail with their rows (the same transaction);
    ``on_duplicate`` gets the result of each object found already stored when its rows were
    to be written (another sender was first), which writes no rows.
    """

    VIA = "C-STORE"

    def __init__(self, actor: Actor, on_duplicate: Callable[[IngestResult], None], *,
                 clinic_id: int | None = None, principal: Principal | None = None) -> None:
        self.actor = actor
        # New patients get the peer's clinic; which patients it may store for is checked
        # when the object is staged (dimse.store), before it is answered.
        # The peer as the policy knows it: a rejection note acts only if it may store there.
        self.audit = StoreAudit(actor, self.VIA, clinic_id=clinic_id, principal=principal)
        self.on_duplicate = on_duplicate
        self._lock = threading.Condition()
        self._queue: list[tuple[Staged, Path]] = []
        self._held: dict[str, tuple[Staged, Path]] = {}  # by SOP Instance UID, until indexed
        self._series: dict[str, str] = {}  # Series Instance UID -> Study Instance UID
        self._busy = False
        self._hurry = 0  # threads waiting in drain()
        self._thread: threading.Thread | None = None

    def held(self, sop_instance_uid: str) -> str | None:
        """The checksum of an object staged on this association and not yet indexed."""
        with self._lock:
            held = self._held.get(sop_instance_uid)
        if held is None:
            return None
        staged, spooled = held
        if staged.sha256:
            return staged.sha256
        try:
            with open(spooled, "rb") as fp:
                return blobs.sha256(fp)[0]
        except FileNotFoundError:
            return None  # indexed meanwhile: the caller finds it stored

    def series_of(self, series_instance_uid: str) -> str | None:
        """The study of a series this association has staged objects of."""
        with self._lock:
            return self._series.get(series_instance_uid)

    def add(self, staged: Staged, spooled: Path) -> None:
        parsed = staged.parsed
        with self._lock:
            self._queue.append((staged, spooled))
            self._held[parsed.sop_instance_uid] = (staged, spooled)
            self._series[parsed.series_instance_uid] = parsed.study_instance_uid
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="dicom-index")
                self._thread.start()
            if len(self._queue) in (1, BATCH_MAX):
                self._lock.notify_all()

    def drain(self) -> None:
        """Wait until everything added so far is indexed (or set aside)."""
        with self._lock:
            self._hurry += 1
            self._lock.notify_all()
            try:
                while self._queue or self._busy:
                    self._lock.wait()
            finally:
                self._hurry -= 1

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        self._lock.wait(IDLE_EXIT)
                    if not self._queue:
                        self._thread = None
                        return
                    gathering = time.monotonic() + BATCH_WAIT
                    while len(self._queue) < BATCH_MAX and not self._hurry:
                        left = gathering - time.monotonic()
                        if left <= 0:
                            break
                        self._lock.wait(left)
                    batch, self._queue = self._queue, []
                    self._busy = True
                try:
                    self._index(batch)
                finally:
                    with self._lock:
                        for staged, _ in batch:
                            self._held.pop(staged.parsed.sop_instance_uid, None)
                        self._busy = False
                        self._lock.notify_all()
        finally:
            connections.close_all()

    def _index(self, batch: list[tuple[Staged, Path]]) -> None:
        try:
            results = index([_checksummed(staged, spooled) for staged, spooled in batch],
                            audit=self.audit)
        except Exception:
            # The database failed: the blobs are gone again, the spool keeps the bytes, and
            # the listener indexes them when it starts again.
            log.exception("cannot index %d received objects; they stay in the spool (%s) "
                          "and are indexed when the listener restarts", len(batch),
                          spool_root())
            close_old_connections()
            return
        for (staged, spooled), result in zip(batch, results, strict=True):
            try:
                if result.accepted:
                    spooled.unlink(missing_ok=True)
                    if result.outcome != IngestOutcome.STORED:
                        self.on_duplicate(result)
                else:
                    _unindexed(self.actor, spooled, result)
            except Exception:
                log.exception("after indexing %s", staged.parsed.sop_instance_uid)


def _checksummed(staged: Staged, spooled: Path) -> Staged:
    with open(spooled, "rb") as fp:
        return checksummed(staged, fp)


def _unindexed(actor: Actor, spooled: Path, result: IngestResult) -> None:
    kept = set_aside(spooled)
    log.error("received object %s was answered for but cannot be indexed (%s); kept as %s",
              result.sop_instance_uid, result.reason, kept)
    record(AuditAction.STORE, actor,
           Target("instance", result.sop_instance_uid, study_uid=result.study_instance_uid),
           Outcome.FAILED, reason=f"received, but not indexed: {result.reason}",
           detail={"operation": "C-STORE", "result": result.outcome.value,
                   "kept_as": str(kept)})


def recover(pid: int | None = None) -> list[IngestResult]:
    """Index what a stopped listener process answered for and left in its spool folder:
    every process's folder (at start, before any association), or the one of ``pid`` (a
    worker that died). Returns the results, in the order the files were found."""
    root = spool_root()
    if not root.is_dir():
        return []
    folders = ([root / str(pid)] if pid is not None else
               [f for f in sorted(root.iterdir()) if f.is_dir() and f.name.isdigit()])
    results = []
    for folder in folders:
        for path in sorted(folder.glob("*")):
            try:
                _, result = _recover_one(path)
            except Exception:
                log.exception("cannot recover %s; it stays in the spool", path)
                continue
            results.append(result)
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty (a file that could not be recovered), or gone
    return results


RECOVERED_VIA = "C-STORE (recovered from the spool)"


def _recover_one(path: Path) -> tuple[str, IngestResult]:
    """Index one spooled file through the one ingest path, its STORE entry with its rows;
    returns the calling AE title it came from and the result."""
    calling_ae, key = _parse_spool_name(path.name)
    indexed = Instance.all_objects.filter(blob_key=key).values_list("sop_instance_uid",
                                                                flat=True).first()
    if indexed is not None:  # its rows were committed just before the listener stopped
        path.unlink()
        log.info("spooled %s was already indexed", indexed)
        return calling_ae, IngestResult(IngestOutcome.DUPLICATE, "already indexed", indexed)
    audit = StoreAudit(Actor.peer(calling_ae, ""), RECOVERED_VIA)
    with open(path, "rb") as fp:
        staged = stage(fp, source=f"cstore:{calling_ae}", adopt=path)
    result = index([staged], audit=audit)[0] if isinstance(staged, Staged) else staged
    if not result.accepted:
        _unindexed(Actor.peer(calling_ae, ""), path, result)
        return calling_ae, result
    if blobs.storage().exists(key):
        blobs.delete(key)  # the first blob of the object: nothing refers to it
    path.unlink()
    log.warning("recovered received object %s from the spool", result.sop_instance_uid)
    return calling_ae, result

