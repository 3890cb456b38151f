"""Fixity of the replica tier, and the replica's part in fixity of the local one.

Each verified replica copy is downloaded, decrypted with its envelope and hashed against
the instance's SHA-256 when its last proof (``Copy.verified_at``) is older than
``FIXITY_MAX_AGE_DAYS``, in the same beat run and by the same command as the local files
(``imaging.fixity``). A copy that fails raises an integrity alert and is repaired from the
other tier (``replica.alerts``); copies not yet verified are replication's business, not
fixity's. An unreachable replica is :class:`~imaging.fixity.StorageUnavailable`: retried,
never an alert.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field

from django.db.models import F, Q
from django.utils import timezone

from imaging import fixity as local_fixity
from imaging.fixity import StorageUnavailable

from . import alerts, store
from .keys import KeyRing
from .models import Copy, IntegrityAlert
from .readback import Problem, read_replica

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyResult:
    copy_id: int
    instance_id: int
    sop_instance_uid: str
    key: str
    ok: bool
    reason: str = ""
    repaired: bool = False


@dataclass
class Report:
    checked: int = 0
    skipped: int = 0
    failures: list[CopyResult] = field(default_factory=list)
    unreadable: list[tuple[int, str]] = field(default_factory=list)


def _is_due(due_before: datetime.datetime) -> Q:
    return Q(verified_at__isnull=True) | Q(verified_at__lt=due_before)


def _checkable() -> Q:
    return Q(tier=Copy.Tier.REPLICA, state=Copy.State.VERIFIED)


def due_copies(batch: int | None = None, *, older_than: datetime.timedelta | None = None,
               now: datetime.datetime | None = None) -> list[int]:
    """Verified replica copies whose last proof is older than ``older_than`` (default:
    ``FIXITY_MAX_AGE_DAYS``), longest unproven first."""
    if not store.configured():
        return []
    age = local_fixity.max_age() if older_than is None else older_than
    cutoff = (now or timezone.now()) - age
    return list(Copy.objects.filter(_checkable() & _is_due(cutoff))
                .order_by(F("verified_at").asc(nulls_first=True), "pk")
                .values_list("pk", flat=True)
                [: local_fixity.batch_size() if batch is None else batch])


def check_copy(copy_id: int, ring: KeyRing | None = None) -> CopyResult | None:
    """Download, decrypt and hash one verified replica copy; on success record the proof
    (``verified_at``), on failure raise the alert and repair. None: not a verified replica
    copy (any more). Raises :class:`StorageUnavailable` if the replica cannot be read now.
    """
    ring = ring or KeyRing.from_settings()
    copy = Copy.objects.select_related("instance").filter(_checkable(), pk=copy_id).first()
    if copy is None:
        return None
    problem = read_replica(copy, ring)
    if problem is None:
        Copy.objects.filter(pk=copy.pk, key=copy.key).update(verified_at=timezone.now())
        return CopyResult(copy.pk, copy.instance_id, copy.instance.sop_instance_uid,
                          copy.key, True)
    alert = alerts.found(copy.instance_id, Copy.Tier.REPLICA, problem, ring)
    return CopyResult(copy.pk, copy.instance_id, copy.instance.sop_instance_uid, copy.key,
                      False, problem.reason, repaired=alert.repaired_at is not None)


def check_if_due(copy_id: int, due_before: datetime.datetime) -> CopyResult | None:
    """:func:`check_copy` unless the copy was proven at or after ``due_before`` (a batch
    dispatched twice is checked once)."""
    if not Copy.objects.filter(_checkable() & _is_due(due_before), pk=copy_id).exists():
        return None
    return check_copy(copy_id)


def verify_due(batch: int | None = None, *,
               older_than: datetime.timedelta | None = None) -> Report:
    """Check, here and now, the replica copies that are due."""
    now = timezone.now()
    cutoff = now - (local_fixity.max_age() if older_than is None else older_than)
    report = Report()
    ids = due_copies(batch, older_than=older_than, now=now)
    if not ids:
        return report
    ring = KeyRing.from_settings()
    for pk in ids:
        if not Copy.objects.filter(_checkable() & _is_due(cutoff), pk=pk).exists():
            report.skipped += 1
            continue
        try:
            result = check_copy(pk, ring)
        except StorageUnavailable as exc:
            log.warning("fixity check of replica copy %s postponed: %s", pk, exc)
            report.unreadable.append((pk, str(exc)))
            continue
        if result is None:
            report.skipped += 1
            continue
        report.checked += 1
        if not result.ok:
            report.failures.append(result)
    return report


def local_failed(instance_id: int, missing: bool, reason: str) -> bool:
    """The local file of an instance failed its fixity check: raise the alert and repair
    it from the replica. Whether it was repaired."""
    kind = IntegrityAlert.Kind.MISSING if missing else IntegrityAlert.Kind.MISMATCH
    alert = alerts.found(instance_id, Copy.Tier.LOCAL, Problem(kind, reason))
    return alert.repaired_at is not None
