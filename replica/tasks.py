"""Celery tasks of the replica: thin callers of ``replica.replicate`` that take ids and
may run twice (a verified copy is left alone; a copy another worker holds is skipped)."""

from __future__ import annotations

import datetime
from typing import Any

from celery import shared_task
from django.conf import settings

from imaging.fixity import StorageUnavailable

from . import copies, database_backup, drill, evict, fixity, priors, recall, replicate, store
from .keys import KeyRing

MAX_RETRIES = 8
# The tasks every ingest queues (replicate_copy, replicate_copies, recall_priors) keep no
# result (ignore_result): nobody waits for one, the copy rows are the record, and a kept
# result cost each send a subscription on the result backend and each run a write to it.


@shared_task(bind=True, max_retries=MAX_RETRIES, ignore_result=True)
def replicate_copy(self: Any, copy_id: int) -> str:
    """One attempt; after a failure, another once the copy's backoff has passed (the
    backlog drain takes over after the last retry)."""
    attempt = replicate.replicate_copy(copy_id)
    if (attempt.outcome == replicate.Outcome.FAILED and attempt.retry_in is not None
            and self.request.retries < MAX_RETRIES and not self.request.is_eager):
        # A second after the wait, so the copy's lease has expired when it runs.
        raise self.retry(countdown=attempt.retry_in + 1)
    return attempt.outcome.value


@shared_task(bind=True, ignore_result=True)
def replicate_copies(self: Any, copy_ids: list[int]) -> dict[str, int]:
    """One attempt for each of the copies one ingest dispatch gathered
    (``replica.dispatcher``); a copy that failed goes on as its own ``replicate_copy``,
    with its backoff and retries. Returns the outcomes counted."""
    counted: dict[str, int] = {}
    for copy_id, attempt in replicate.replicate_many(copy_ids):
        counted[attempt.outcome.value] = counted.get(attempt.outcome.value, 0) + 1
        if (attempt.outcome == replicate.Outcome.FAILED and attempt.retry_in is not None
                and not self.request.is_eager):
            replicate_copy.apply_async((copy_id,), countdown=attempt.retry_in + 1,
                                       queue=self.request.delivery_info.get("routing_key"))
    return counted


@shared_task
def drain_backlog(limit: int | None = None, queue: str | None = None) -> int:
    """The periodic sweep (CELERY_BEAT_SCHEDULE): queue tasks for the replica copies not
    yet verified that no worker holds and no earlier sweep still has in the queue, so what
    an outage left behind is replicated once the replica is back. Refuses to start with a
    key ring it cannot read. Returns how many copies it queued."""
    if not store.configured():
        return 0
    KeyRing.from_settings()
    return copies.dispatch_backlog(limit or settings.REPLICA_DRAIN_BATCH, queue=queue)


@shared_task
def restore_drill() -> int | None:
    """The weekly drill (CELERY_BEAT_SCHEDULE): a random sample brought back and checked;
    returns the report's id (None without a replica). A failed drill is a report, not a
    retry: running it again would check another sample."""
    if not store.configured():
        return None
    return drill.run().pk


@shared_task(bind=True, max_retries=3)
def backup_database(self: Any) -> str | None:
    """The daily database backup to the replica; returns its key (None without a replica).
    Each attempt writes a new object, so a retry after a failure never overwrites one."""
    if not store.configured():
        return None
    try:
        backup = database_backup.to_replica()
    except database_backup.BackupFailed as exc:
        if self.request.is_eager:
            raise
        raise self.retry(exc=exc, countdown=600) from exc
    database_backup.record_replica_backup(backup, "backup_database")
    return backup.key


@shared_task(autoretry_for=(StorageUnavailable,), retry_backoff=30, retry_backoff_max=3600,
             retry_jitter=True, max_retries=6)
def verify_replica_copy(copy_id: int, due_before: str) -> bool | None:
    """Fixity of one replica copy (dispatched by ``imaging.tasks.verify_fixity``): None if
    it was proven since ``due_before`` or is no longer a verified copy. An unreachable
    replica is retried with backoff; a bad copy raises an alert and is repaired."""
    result = fixity.check_if_due(copy_id, datetime.datetime.fromisoformat(due_before))
    return None if result is None else result.ok


@shared_task
def evict_local(dry_run: bool = False) -> int:
    """The periodic eviction (CELERY_BEAT_SCHEDULE): local files whose replica copy is
    verified, by clinic age limit and free-space watermark. Returns how many it evicted."""
    if not store.configured():
        return 0
    return evict.evict_local(dry_run=dry_run).count


@shared_task(bind=True, max_retries=3, ignore_result=True)
def recall_priors(self: Any, study_id: int) -> int:
    """Recall the evicted objects of a new study's relevant priors; retried while the
    replica cannot be read. Returns how many objects it brought back."""
    if not store.configured():
        return 0
    outcomes = priors.recall_priors(study_id)
    if outcomes[recall.Outcome.FAILED] and not self.request.is_eager:
        raise self.retry(countdown=60)
    return outcomes[recall.Outcome.RECALLED]
