"""Celery tasks of the archive: thin callers of services that take IDs and may run twice."""

from __future__ import annotations

import datetime

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import fixity
from .models import Instance


@shared_task(
    autoretry_for=(fixity.StorageUnavailable,),
    retry_backoff=30,
    retry_backoff_max=3600,
    retry_jitter=True,
    max_retries=6,
)
def verify_instance_fixity(instance_id: int, due_before: str | None = None) -> bool | None:
    """Re-hash one stored instance; ``None`` if it is gone or was checked since ``due_before``.

    Storage errors other than a missing file are retried with backoff; the instance keeps its
    previous fixity state meanwhile.
    """
    if due_before is None:
        try:
            return fixity.verify_instance(instance_id)
        except Instance.DoesNotExist:
            return None
    return fixity.verify_if_due(instance_id, datetime.datetime.fromisoformat(due_before))


@shared_task
def verify_fixity(batch: int | None = None) -> int:
    """The periodic check (CELERY_BEAT_SCHEDULE): dispatch one task per due instance, and
    with a replica one per due replica copy (``replica.tasks.verify_replica_copy``).

    Each task re-checks that its instance is still due, so a batch dispatched twice by
    overlapping runs is verified once. Returns how many tasks were dispatched.
    """
    now = timezone.now()
    due_before = (now - fixity.max_age()).isoformat()
    ids = fixity.due_instances(batch, now=now)
    for pk in ids:
        verify_instance_fixity.delay(pk, due_before)
    if not settings.REPLICA_URL:
        return len(ids)
    from replica.fixity import due_copies
    from replica.tasks import verify_replica_copy

    copy_ids = due_copies(batch, now=now)
    for pk in copy_ids:
        verify_replica_copy.delay(pk, due_before)
    return len(ids) + len(copy_ids)
