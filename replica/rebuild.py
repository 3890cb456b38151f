"""Rebuild the index (patients, studies, series, instances) from the DICOM objects
themselves, when the database is lost and no backup can be restored.

Every object goes through the one ingest path (``imaging.ingest.stage`` then ``index``),
so what is rebuilt is what ingest would have written: the same rows, the same checks, the
same STORE entries on the trail. From the local tier each object is indexed where it is
(``stage(key=...)``: never copied, never deleted). From the replica each object is
decrypted with the envelope in its own metadata into the spool, stored on the local tier
by ingest, and its copy rows are written in the same transaction: the local one, and the
replica one verified with its key and envelope, so replication does not upload it again.

Idempotent: an object already indexed (its key known, or its SOP Instance UID stored with
the same bytes) adds nothing. What DICOM files do not hold cannot come back: users, grants,
consents, shares, report authorship, the audit trail, which clinic a patient belongs to.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from audit.trail import Actor
from imaging import blobs
from imaging.ingest import IngestResult, Outcome, Staged, index, stage
from imaging.models import Instance, Patient, Series, Study
from imaging.store_audit import StoreAudit, record_stores

from . import listing
from .crypto import Envelope, InvalidObject
from .keys import KeyRing
from .models import Copy

log = logging.getLogger(__name__)

BATCH = 50  # objects indexed per transaction
VIA = "rebuild_index"


class Source(enum.StrEnum):
    LOCAL = "local"
    REPLICA = "replica"


@dataclass
class RebuildReport:
    source: Source
    dry_run: bool = False
    seen: int = 0  # objects listed
    known: int = 0  # already indexed under their key: not read again
    instances: int = 0
    bytes: int = 0
    patients: int = 0
    studies: int = 0
    series: int = 0
    duplicates: int = 0  # a copy of an object already indexed under another key
    purged: int = 0  # of a purged patient (a tombstone, or a file awaiting deletion): skipped
    # (key, reason): objects that could not be read, decrypted or indexed.
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unreadable


Progress = Callable[[RebuildReport], None]


def rebuild(source: Source, *, dry_run: bool = False, ring: KeyRing | None = None,
            progress: Progress | None = None) -> RebuildReport:
    """Index every object of ``source`` that the index does not hold yet.

    ``dry_run``: read and check every object as ingest would, write nothing; the counts
    say what would be recovered (within one run, not counting objects that share a UID).
    ``progress`` is called after each object.
    """
    report = RebuildReport(source, dry_run)
    before = _counts()
    run = _Run(report, dry_run, progress)
    if source == Source.LOCAL:
        run.local()
    else:
        run.replica(ring or KeyRing.from_settings())
    if not dry_run:
        after = _counts()
        report.patients, report.studies, report.series = (
            a - b for a, b in zip(after, before, strict=True))
    else:
        report.patients, report.studies, report.series = (
            len(run.would_patients), len(run.would_studies), len(run.would_series))
    return report


def _counts() -> tuple[int, int, int]:
    return Patient.objects.count(), Study.all_objects.count(), Series.all_objects.count()


@dataclass(frozen=True)
class _Pending:
    """A staged object and, from the replica, the object it came from."""

    staged: Staged
    replica_key: str = ""
    envelope: Envelope | None = None
    ciphertext_size: int = 0


class _Run:
    def __init__(self, report: RebuildReport, dry_run: bool, progress: Progress | None):
        self.report = report
        self.dry_run = dry_run
        self.progress = progress
        self.audit = StoreAudit(Actor.system("rebuild_index"), VIA)
        self.batch: list[_Pending] = []
        self.would_patients: set[tuple[str, str]] = set()
        self.would_studies: set[str] = set()
        self.would_series: set[str] = set()
        self.purged = listing.purged_studies()

    # --- local tier: index each object where it is -----------------------------------
    def local(self) -> None:
        indexed = set(Instance.all_objects.values_list("blob_key", flat=True).iterator())
        erased = listing.awaiting_deletion()
        try:
            for key in listing.local_keys():
                self.report.seen += 1
                if key in indexed:
                    self.report.known += 1
                elif key in erased:
                    self.report.purged += 1
                else:
                    self._local_one(key)
                self._tick()
        finally:  # what is staged is indexed even if the listing fails half-way
            self._flush()

    def _local_one(self, key: str) -> None:
        try:
            with blobs.open_blob(key) as fp:
                slot = stage(fp, source=f"rebuild:local:{key}", key=key)
        except OSError as exc:
            self._unreadable(key, f"cannot read it: {exc}")
            return
        self._add(key, slot)

    # --- replica: decrypt, store locally through ingest, keep the replica copy --------
    def replica(self, ring: KeyRing) -> None:
        known = set(Copy.objects.filter(tier=Copy.Tier.REPLICA).exclude(key="")
                    .values_list("key", flat=True).iterator())
        try:
            for obj in listing.replica_objects():
                self.report.seen += 1
                if obj.key in known:
                    self.report.known += 1
                else:
                    self._replica_one(obj, ring)
                self._tick()
        finally:  # objects already written locally are indexed even if the replica fails
            self._flush()

    def _replica_one(self, obj: listing.ReplicaObject, ring: KeyRing) -> None:
        try:
            envelope = listing.replica_envelope(obj.key)
            with listing.decrypted(obj.key, envelope, ring) as plain, plain.open() as fp:
                # Dry run: checked as ingest checks it, written nowhere.
                slot = (stage(fp, source=f"rebuild:replica:{obj.key}", key=obj.key)
                        if self.dry_run else
                        stage(fp, source=f"rebuild:replica:{obj.key}", adopt=plain.path))
        except (InvalidObject, KeyError, LookupError) as exc:
            self._unreadable(obj.key, str(exc).strip('"'))
            return
        except OSError as exc:  # the spool or the local storage (full, not writable)
            self._unreadable(obj.key, f"cannot be written locally: {exc}")
            return
        self._add(obj.key, slot, envelope, obj.size, plain.sha256)

    # --- shared ------------------------------------------------------------------------
    def _add(self, key: str, slot: Staged | IngestResult, envelope: Envelope | None = None,
             ciphertext_size: int = 0, plain_sha256: str = "") -> None:
        if isinstance(slot, IngestResult):
            self._not_staged(key, slot, envelope, ciphertext_size, plain_sha256)
            return
        tombstone = self.purged.get(slot.parsed.study_instance_uid)
        if tombstone is not None:
            # Never indexed again; a blob this run wrote for it goes (the kept one stays).
            self.report.purged += 1
            log.info("rebuild_index: %s is of a purged patient (tombstone %s): skipped",
                     key, tombstone)
            if not self.dry_run:
                slot.discard()
            return
        if self.dry_run:
            parsed = slot.parsed
            self.report.instances += 1
            self.report.bytes += slot.size
            self.would_patients.add((parsed.patient["patient_id"] or parsed.sop_instance_uid,
                                     parsed.patient["issuer"]))
            self.would_studies.add(parsed.study_instance_uid)
            self.would_series.add(parsed.series_instance_uid)
            return
        replica_key = key if envelope is not None else ""
        self.batch.append(_Pending(slot, replica_key, envelope, ciphertext_size))
        if len(self.batch) >= BATCH:
            self._flush()

    def _not_staged(self, key: str, result: IngestResult, envelope: Envelope | None,
                    ciphertext_size: int, plain_sha256: str) -> None:
        if result.outcome == Outcome.DUPLICATE:
            self.report.duplicates += 1
            if envelope is not None and result.instance_id is not None and not self.dry_run:
                _adopt_replica_copy(result.instance_id, key, envelope, plain_sha256,
                                    ciphertext_size)
            return
        self._unreadable(key, f"{result.outcome.value}: {result.reason}")
        if not self.dry_run and result.outcome == Outcome.REJECTED:
            record_stores(self.audit.actor, [result], via=VIA)

    def _flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        with transaction.atomic():
            results = index([p.staged for p in batch], audit=self.audit)
            for pending, result in zip(batch, results, strict=True):
                if result.outcome == Outcome.STORED and result.instance_id is not None:
                    self.report.instances += 1
                    self.report.bytes += pending.staged.size
                    if pending.envelope is not None:
                        _record_replica_copy(result.instance_id, pending)
                elif result.outcome == Outcome.DUPLICATE:
                    # Two copies of one object in this batch: the first one is indexed.
                    self.report.duplicates += 1
                    if pending.envelope is not None and result.instance_id is not None:
                        _adopt_replica_copy(result.instance_id, pending.replica_key,
                                            pending.envelope, pending.staged.sha256,
                                            pending.ciphertext_size)
                else:
                    self._unreadable(pending.replica_key or pending.staged.key,
                                     f"{result.outcome.value}: {result.reason}")
            rest = [r for r in results if r.outcome != Outcome.STORED]
            if rest:
                record_stores(self.audit.actor, rest, via=VIA)

    def _unreadable(self, key: str, reason: str) -> None:
        log.warning("rebuild_index: %s not recovered: %s", key, reason)
        self.report.unreadable.append((key, reason))

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress(self.report)


def _replica_fields(key: str, envelope: Envelope, sha256: str, size: int) -> dict[str, object]:
    now = timezone.now()
    return dict(key=key, state=Copy.State.VERIFIED, sha256=sha256, size=size,
                key_id=envelope.key_id, wrapped_key=envelope.wrapped_key,
                nonce_prefix=envelope.nonce_prefix, segment_size=envelope.segment_size,
                packing=envelope.packing, written_at=now, verified_at=now, claimed_until=None,
                last_error="")


def _record_replica_copy(instance_id: int, pending: _Pending) -> None:
    """The replica copy of an object recovered from it: verified (it was just decrypted,
    authenticated and hashed), under its key and envelope. Ingest wrote it as pending in
    this transaction; with no replica configured at ingest time it is created here."""
    assert pending.envelope is not None
    fields = _replica_fields(pending.replica_key, pending.envelope, pending.staged.sha256,
                             pending.ciphertext_size)
    Copy.objects.update_or_create(instance_id=instance_id, tier=Copy.Tier.REPLICA,
                                  defaults=fields)
    if not Copy.objects.filter(instance_id=instance_id, tier=Copy.Tier.LOCAL).exists():
        Copy.objects.create(instance_id=instance_id, tier=Copy.Tier.LOCAL,
                            key=pending.staged.key, state=Copy.State.WRITTEN,
                            sha256=pending.staged.sha256, size=pending.staged.size,
                            written_at=timezone.now())


def _adopt_replica_copy(instance_id: int, key: str, envelope: Envelope, sha256: str,
                        size: int) -> None:
    """A replica object holding the very bytes of an instance already indexed (rebuilt from
    the local tier first): it becomes that instance's replica copy unless one is verified,
    so replication need not upload the object again. Only the same whole file (the same
    SHA-256), not merely the same dataset."""
    if not Instance.all_objects.filter(pk=instance_id, sha256=sha256).exists():
        return
    with transaction.atomic():
        copy = (Copy.objects.select_for_update()
                .filter(instance_id=instance_id, tier=Copy.Tier.REPLICA).first())
        if copy is not None and copy.state == Copy.State.VERIFIED:
            return
        Copy.objects.update_or_create(instance_id=instance_id, tier=Copy.Tier.REPLICA,
                                      defaults=_replica_fields(key, envelope, sha256, size))
