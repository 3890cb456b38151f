"""Eviction from the local tier: delete local files whose replica copy is proven, to make
room, and let reads recall them (``replica.recall``).

Two reasons to evict: a clinic's ``evict_local_after_days`` (counted from when the local
copy was stored or last recalled), and, on a local file system, free space below
``LOCAL_TIER_MIN_FREE_PERCENT`` (then the oldest local copies of any clinic go first, and
only as many bytes as the shortfall). Either way a file goes only if the instance's replica
copy is VERIFIED with the instance's SHA-256 and the local copy holds that hash too.

That condition is checked by the conditional UPDATE that marks the local copy evicted, in
the transaction that deletes the file: a recall (which marks the copy written in the
transaction that puts the file back) or a repair racing it either waits for the row or
finds it changed, and the copy is never evicted on the strength of a check made earlier.
"""

from __future__ import annotations

import datetime
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from accounts.models import Clinic
from imaging import blobs
from portal.exclusive import exclusive

from .models import Copy

log = logging.getLogger(__name__)

BATCH = 500
#: The lock one eviction run holds (``portal.exclusive``).
LOCK = "replica-evict-local"


@dataclass
class Report:
    """What one run evicted (or, dry, would evict)."""

    by_age: int = 0
    by_watermark: int = 0
    bytes_freed: int = 0
    #: Bytes the free-space watermark asked for; None when it is off.
    shortfall: int | None = None
    keys: list[str] = field(default_factory=list)
    #: Another run held the eviction lock, so this one did nothing.
    skipped: bool = False

    @property
    def count(self) -> int:
        return self.by_age + self.by_watermark


def evictable() -> QuerySet[Copy]:
    """Local copies that may go: written, with the instance's hash, and a verified replica
    copy with that same hash."""
    proven = Copy.objects.filter(instance_id=OuterRef("instance_id"), tier=Copy.Tier.REPLICA,
                                 state=Copy.State.VERIFIED, sha256=OuterRef("instance__sha256"))
    return (Copy.objects.filter(tier=Copy.Tier.LOCAL, state=Copy.State.WRITTEN,
                                sha256=F("instance__sha256"), written_at__isnull=False)
            .filter(Exists(proven)))


def evict_copy(copy_id: int, written_at: datetime.datetime) -> bool:
    """Evict one local copy if it is still evictable and unchanged since it was picked
    (``written_at``: a copy recalled meanwhile has a newer one); whether it was."""
    key = (Copy.objects.filter(pk=copy_id).values_list("instance__blob_key", flat=True)
           .first())
    if key is None:
        return False
    with transaction.atomic():
        taken = evictable().filter(pk=copy_id, written_at=written_at).update(
            state=Copy.State.EVICTED, claimed_until=None)
        if not taken:
            return False
        # Inside the transaction: if the delete fails the row stays written.
        blobs.delete(key)
    return True


def shortfall(total: int, free: int, min_free_percent: float) -> int:
    """Bytes to free so that ``free`` is at least ``min_free_percent`` of ``total``."""
    return max(0, math.ceil(total * min_free_percent / 100 - free))


def watermark_shortfall() -> int | None:
    """Bytes the local tier is short of its free-space watermark; None when the watermark
    is off (0, or a storage that is not a local file system)."""
    percent = float(settings.LOCAL_TIER_MIN_FREE_PERCENT)
    local = blobs.storage()
    if percent <= 0 or not isinstance(local, FileSystemStorage):
        return None
    usage = shutil.disk_usage(local.location)
    return shortfall(usage.total, usage.free, percent)


def _candidates(queryset: QuerySet[Copy]) -> Iterator[tuple[int, datetime.datetime, str, int]]:
    """(copy id, written_at, key, size), oldest first, read in batches by keyset."""
    ordered = queryset.order_by("written_at", "pk")
    page = ordered
    while rows := list(page.values_list("pk", "written_at", "instance__blob_key",
                                        "instance__size_bytes")[:BATCH]):
        for pk, written_at, key, size in rows:
            assert written_at is not None  # evictable() has none without
            yield pk, written_at, key, size
        page = ordered.filter(Q(written_at__gt=written_at) | Q(written_at=written_at,
                                                               pk__gt=pk))


def evict_by_age(report: Report, *, dry_run: bool = False,
                 now: datetime.datetime | None = None) -> None:
    now = now or timezone.now()
    for clinic_id, days in (Clinic.objects.exclude(evict_local_after_days=None)
                            .values_list("pk", "evict_local_after_days")):
        due = evictable().filter(instance__series__study__patient__clinic_id=clinic_id,
                                 written_at__lte=now - datetime.timedelta(days=days or 0))
        for pk, written_at, key, size in _candidates(due):
            if dry_run or evict_copy(pk, written_at):
                report.by_age += 1
                report.bytes_freed += size
                report.keys.append(key)


def evict_by_watermark(report: Report, needed: int, *, dry_run: bool = False) -> None:
    """Evict the oldest evictable copies until ``needed`` bytes are freed (or none is left)."""
    freed = 0
    if needed <= 0:
        return
    for pk, written_at, key, size in _candidates(evictable()):
        if dry_run and key in report.keys:
            continue  # counted by age already in this dry run
        if dry_run or evict_copy(pk, written_at):
            report.by_watermark += 1
            report.bytes_freed += size
            report.keys.append(key)
            freed += size
            if freed >= needed:
                return


def evict_local(*, dry_run: bool = False, now: datetime.datetime | None = None) -> Report:
    """One run: by each clinic's age limit, then by the free-space watermark. One run at a
    time (``portal.exclusive``): two runs measuring the same shortfall would each free it,
    twice what the watermark asks; a run that finds another going skips."""
    if dry_run:
        return _run(dry_run=True, now=now)
    with exclusive(LOCK) as held:
        if not held:
            log.info("eviction skipped: another run is going")
            return Report(skipped=True)
        return _run(dry_run=False, now=now)


def _run(*, dry_run: bool, now: datetime.datetime | None) -> Report:
    report = Report()
    evict_by_age(report, dry_run=dry_run, now=now)
    needed = watermark_shortfall()
    report.shortfall = needed
    if needed:
        if dry_run:  # what the age pass would have freed counts towards the shortfall
            needed -= report.bytes_freed
        evict_by_watermark(report, needed, dry_run=dry_run)
    if report.count and not dry_run:
        log.info("evicted %d local objects (%d bytes): %d by age, %d by free space",
                 report.count, report.bytes_freed, report.by_age, report.by_watermark)
    return report
