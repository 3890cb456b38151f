"""Fixity: re-read stored blobs and check them against the SHA-256 taken at ingest.

A blob whose bytes no longer match, or that is gone, is marked failed and logged. Without a
replica it is never "repaired" from anywhere; with one (``REPLICA_URL``) the replica tier is
checked too, and a bad copy raises an integrity alert and is rewritten from the other copy
once that one is proven to hash to the SHA-256 on record (``replica.fixity``). A storage
that cannot be read right now (network, permissions, an S3 outage) is not a failed check:
:class:`StorageUnavailable` is raised instead and the instance keeps its previous state, so
the Celery task can retry and an outage never marks the whole archive as damaged.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from ops.metrics import count_fixity

from . import blobs
from .models import Instance

log = logging.getLogger(__name__)

# Overridable in settings; see README ("FIXITY_*").
DEFAULT_MAX_AGE = datetime.timedelta(days=30)
DEFAULT_BATCH_SIZE = 5000


class StorageUnavailable(Exception):
    """The blob could not be read for a reason other than its absence; try again later."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:  # only with S3 storage installed
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover
        pass
    else:
        errors += [BotoCoreError, ClientError]
    return tuple(errors)


@dataclass(frozen=True)
class FixityResult:
    instance_id: int
    sop_instance_uid: str
    blob_key: str
    ok: bool
    reason: str = ""
    repaired: bool = False  # from the other copy, after it failed
    replica: bool = False  # the replica copy's check (blob_key is then its object key)


@dataclass
class FixityReport:
    checked: int = 0
    skipped: int = 0
    failures: list[FixityResult] = field(default_factory=list)
    # Could not be read now (not a failed check): (instance id, error).
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    # The replica tier's copies (only with a replica): how many checked; their failures
    # and unreadable ones are in the lists above, the failures' keys being object keys.
    replica_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.unreadable

    @property
    def unrepaired(self) -> list[FixityResult]:
        return [f for f in self.failures if not f.repaired]


def max_age() -> datetime.timedelta:
    days = getattr(settings, "FIXITY_MAX_AGE_DAYS", None)
    return DEFAULT_MAX_AGE if days is None else datetime.timedelta(days=float(days))


def batch_size() -> int:
    return int(getattr(settings, "FIXITY_BATCH_SIZE", DEFAULT_BATCH_SIZE))


def _digest(key: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for chunk in blobs.iter_chunks(key, recall=False):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def check_instance(instance_id: int, *, alert: bool = False) -> FixityResult:
    """Re-hash one instance's blob, record the outcome on the row and return it.

    ``alert``: with a replica configured, a failure also raises an integrity alert and is
    repaired from the replica (what the fixity check does; ``reconcile`` only looks).
    Raises ``Instance.DoesNotExist`` if the row is gone and :class:`StorageUnavailable` if
    the storage cannot be read now (the row is then left as it was).
    """
    row = Instance.all_objects.values("sop_instance_uid", "blob_key", "sha256", "size_bytes").get(
        pk=instance_id
    )
    key = row["blob_key"]
    try:
        digest, size = _digest(key)
    except FileNotFoundError:
        ok, reason, missing = False, "the stored file is missing", True
    except _transient_errors() as exc:
        raise StorageUnavailable(f"cannot read {key}: {exc}") from exc
    else:
        missing = False
        ok = digest == row["sha256"] and size == row["size_bytes"]
        reason = "" if ok else (
            f"content changed: SHA-256 {digest} ({size} bytes), "
            f"expected {row['sha256']} ({row['size_bytes']} bytes)"
        )
    Instance.all_objects.filter(pk=instance_id).update(fixity_ok=ok, fixity_checked=timezone.now())
    count_fixity(ok)
    if not ok:
        log.error(
            "fixity check FAILED for instance %s (SOP Instance UID %s, key %s): %s",
            instance_id, row["sop_instance_uid"], key, reason,
        )
    repaired = False
    if not ok and alert and settings.REPLICA_URL:
        from replica.fixity import local_failed

        repaired = local_failed(instance_id, missing, reason)
    return FixityResult(instance_id, row["sop_instance_uid"], key, ok, reason, repaired)


def verify_instance(instance_id: int) -> bool:
    """Whether the stored blob still has the bytes it was ingested with (and record it)."""
    return check_instance(instance_id, alert=True).ok


def verify_if_due(instance_id: int, due_before: datetime.datetime) -> bool | None:
    """Verify unless someone verified the instance at or after ``due_before``.

    Lets the same batch be dispatched twice (overlapping beats, redelivered messages)
    without doing the work twice. ``None`` means skipped (or the instance is gone).
    """
    result = _check_if_due(instance_id, due_before)
    return None if result is None else result.ok


def _is_due(due_before: datetime.datetime) -> Q:
    return Q(fixity_checked__isnull=True) | Q(fixity_checked__lt=due_before)


def _check_if_due(instance_id: int, due_before: datetime.datetime) -> FixityResult | None:
    if not Instance.all_objects.filter(_is_due(due_before), pk=instance_id).exists():
        return None
    try:
        return check_instance(instance_id, alert=True)
    except Instance.DoesNotExist:  # deleted meanwhile
        return None


def due_instances(
    batch: int | None = None, *, older_than: datetime.timedelta | None = None,
    now: datetime.datetime | None = None,
) -> list[int]:
    """Up to ``batch`` instances never checked or not checked within ``older_than``.

    Never-checked first, then the longest unchecked, so repeated runs cover the archive.
    """
    cutoff = (now or timezone.now()) - (max_age() if older_than is None else older_than)
    return list(
        Instance.all_objects.filter(_is_due(cutoff))
        # An instance evicted from the local tier has no local file to re-hash: its replica
        # copy is checked by the replica's own fixity, and reading it here would recall it.
        .exclude(copies__tier="local", copies__state="evicted")
        .order_by(F("fixity_checked").asc(nulls_first=True), "pk")
        .values_list("pk", flat=True)[: batch_size() if batch is None else batch]
    )


def verify_due(
    batch: int | None = None, *, older_than: datetime.timedelta | None = None
) -> FixityReport:
    """Verify, here and now, the instances that are due (see :func:`due_instances`)."""
    now = timezone.now()
    cutoff = now - (max_age() if older_than is None else older_than)
    report = FixityReport()
    for pk in due_instances(batch, older_than=older_than, now=now):
        try:
            result = _check_if_due(pk, cutoff)
        except StorageUnavailable as exc:
            log.warning("fixity check of instance %s postponed: %s", pk, exc)
            report.unreadable.append((pk, str(exc)))
            continue
        if result is None:
            report.skipped += 1  # checked meanwhile by a worker, or deleted
            continue
        report.checked += 1
        if not result.ok:
            report.failures.append(result)
    if settings.REPLICA_URL:
        _verify_replica_due(report, batch, older_than)
    return report


def _verify_replica_due(report: FixityReport, batch: int | None,
                        older_than: datetime.timedelta | None) -> None:
    from replica import fixity as replica_fixity

    found = replica_fixity.verify_due(batch, older_than=older_than)
    report.replica_checked = found.checked
    report.skipped += found.skipped
    report.unreadable += found.unreadable
    report.failures += [
        FixityResult(f.instance_id, f.sop_instance_uid, f.key, False,
                     f"replica copy: {f.reason}", f.repaired, replica=True)
        for f in found.failures
    ]
