"""The copy rows: recorded with the index rows ingest writes, counted for admins.

Copy rows are written in the transaction of the instance rows, so a crash between commit
and dispatch leaves a pending row for the backlog drain, never an object the replica is
not told about. The tasks are dispatched only once that transaction has committed.
With no replica configured nothing here runs: ingest writes no rows and makes no queries.
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from imaging.fast_insert import insert_rows
from imaging.models import Instance

from .dispatcher import ManySend, dispatcher
from .models import Copy

log = logging.getLogger(__name__)

ENROL_BATCH = 1000
#: The replica copy is not there yet (or not proven there).
UNREPLICATED = (Copy.State.PENDING, Copy.State.WRITTEN, Copy.State.FAILED)


class Stored(NamedTuple):
    """An instance just indexed, as ingest knows it."""

    instance_id: int
    study_id: int
    blob_key: str
    sha256: str
    size: int


def on_stored(stored: Sequence[Stored]) -> None:
    """Record the local and (pending) replica copies of instances being indexed, in the
    caller's transaction, and replicate them once it commits. Called by ingest only when
    a replica is configured."""
    from . import priors

    now = timezone.now()
    rows: list[dict[str, object]] = []
    for item in stored:
        rows.append(dict(instance_id=item.instance_id, tier=Copy.Tier.LOCAL, key=item.blob_key,
                         state=Copy.State.WRITTEN, sha256=item.sha256, size=item.size,
                         written_at=now))
        # Its key is chosen by each upload attempt (replica.replicate.upload).
        rows.append(dict(instance_id=item.instance_id, tier=Copy.Tier.REPLICA))
    sends: dict[ManySend, list[int]] = {dispatch_gathered: insert_rows(Copy, rows)[1::2]}
    if settings.RECALL_PRIORS_COUNT > 0:
        sends[priors.dispatch] = sorted({item.study_id for item in stored})
    # After the commit, and off the storer's clock (replica.dispatcher), in one hand-over
    # for the copies and the priors: a broker that is down must not turn a stored object
    # into a failed ingest; the row is committed and the backlog drain takes it.
    transaction.on_commit(functools.partial(dispatcher.submit_gathered, sends), robust=True)


def dispatch(copy_ids: Iterable[int | None], queue: str | None = None) -> int:
    """Queue one replication task per copy; returns how many."""
    from .tasks import replicate_copy

    count = 0
    for pk in copy_ids:
        if pk is None:
            continue
        if queue is None:
            replicate_copy.delay(pk)
        else:
            replicate_copy.apply_async((pk,), queue=queue)
        count += 1
    return count


def dispatch_gathered(copy_ids: list[int], queue: str | None = None) -> None:
    """One ``replicate_copies`` for the copies of the ingests the dispatcher gathered (or
    of a batch of the backlog)."""
    from .tasks import replicate_copies

    if queue is None:
        replicate_copies.delay(copy_ids)
    else:
        replicate_copies.apply_async((copy_ids,), queue=queue)


def enrol_existing(batch: int = ENROL_BATCH) -> list[int]:
    """Copy rows for instances stored before the replica was configured (or while it was
    not): returns the ids of their new, pending replica copies."""
    created: list[int] = []
    while True:
        todo = list(Instance.all_objects.exclude(copies__tier=Copy.Tier.REPLICA)
                    .order_by("pk").values_list("pk", "blob_key", "sha256", "size_bytes")
                    [:batch])
        if not todo:
            return created
        now = timezone.now()
        rows: list[Copy] = []
        for pk, blob_key, digest, size in todo:
            rows.append(Copy(instance_id=pk, tier=Copy.Tier.LOCAL, key=blob_key,
                             state=Copy.State.WRITTEN, sha256=digest, size=size,
                             written_at=now))
            rows.append(Copy(instance_id=pk, tier=Copy.Tier.REPLICA))
        with transaction.atomic():
            # Another enrolment running at the same time: its rows win, ours are skipped.
            Copy.objects.bulk_create(rows, ignore_conflicts=True)
        created += Copy.objects.filter(
            tier=Copy.Tier.REPLICA, instance_id__in=[t[0] for t in todo],
            state=Copy.State.PENDING).values_list("pk", flat=True)


def _backlog(now: datetime.datetime) -> QuerySet[Copy]:
    return (Copy.objects.filter(tier=Copy.Tier.REPLICA, state__in=UNREPLICATED)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            .order_by("created"))


def backlog(limit: int | None = None, now: datetime.datetime | None = None) -> list[int]:
    """Replica copies not verified and not held by a worker (or past their retry wait),
    oldest first."""
    found = _backlog(now or timezone.now()).values_list("pk", flat=True)
    return list(found[:limit] if limit is not None else found)


def reserve_backlog(limit: int, now: datetime.datetime | None = None) -> list[int]:
    """The backlog less the copies an earlier sweep queued a task for that may still be in
    the broker; those returned are marked queued for the broker's visibility timeout (a
    task not run by then was lost with its worker and comes back, or was never sent).
    Two sweeps at once reserve different copies."""
    now = now or timezone.now()
    until = now + datetime.timedelta(seconds=settings.CELERY_VISIBILITY_TIMEOUT)
    with transaction.atomic():
        ids = list(_backlog(now).filter(Q(queued_until__isnull=True) | Q(queued_until__lte=now))
                   .select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
        Copy.objects.filter(pk__in=ids).update(queued_until=until)
    return ids


def dispatch_backlog(limit: int, queue: str | None = None) -> int:
    """Queue the reserved backlog in tasks of ``REPLICA_DISPATCH_BATCH`` copies; returns
    how many copies."""
    ids = reserve_backlog(limit)
    batch = settings.REPLICA_DISPATCH_BATCH
    for start in range(0, len(ids), batch):
        dispatch_gathered(ids[start:start + batch], queue=queue)
    return len(ids)


class Summary(NamedTuple):
    """Replica copies by state, and the age of the oldest one not yet verified."""

    verified: int
    pending: int
    failed: int
    lag: datetime.timedelta | None


def summary(copies: QuerySet[Copy] | None = None,
            now: datetime.datetime | None = None) -> Summary:
    copies = (copies if copies is not None else Copy.objects.all()).filter(
        tier=Copy.Tier.REPLICA)
    counts = dict(copies.values_list("state").annotate(n=Count("pk")).order_by())
    oldest = copies.filter(state__in=UNREPLICATED).aggregate(oldest=Min("created"))["oldest"]
    return Summary(
        verified=counts.get(Copy.State.VERIFIED, 0),
        pending=counts.get(Copy.State.PENDING, 0) + counts.get(Copy.State.WRITTEN, 0),
        failed=counts.get(Copy.State.FAILED, 0),
        lag=(now or timezone.now()) - oldest if oldest is not None else None,
    )


def per_study(study_ids: Sequence[int]) -> dict[int, Summary]:
    """:class:`Summary` of each study's replica copies, in one query."""
    rows = (Copy.objects.filter(tier=Copy.Tier.REPLICA,
                                instance__series__study_id__in=list(study_ids))
            .values_list("instance__series__study_id", "state")
            .annotate(n=Count("pk"), oldest=Min("created")).order_by())
    now = timezone.now()
    found: dict[int, dict[str, int]] = {}
    oldest: dict[int, datetime.datetime] = {}
    for study_id, state, n, first in rows:
        found.setdefault(study_id, {})[state] = n
        if state in UNREPLICATED and (study_id not in oldest or first < oldest[study_id]):
            oldest[study_id] = first
    return {
        study_id: Summary(counts.get(Copy.State.VERIFIED, 0),
                          counts.get(Copy.State.PENDING, 0) + counts.get(Copy.State.WRITTEN, 0),
                          counts.get(Copy.State.FAILED, 0),
                          now - oldest[study_id] if study_id in oldest else None)
        for study_id, counts in found.items()
    }
