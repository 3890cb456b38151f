"""Celery tasks for LGPD work: thin callers of the services, given IDs, safe to run twice."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import export, retention


@shared_task(bind=True, acks_late=True, max_retries=3)
def build_export(self: Any, export_id: int) -> str:
    """Build one data export; the service claims it, so a second run does nothing.

    A run that finds the export running is the broker giving the task again because its
    worker died (or outran the visibility timeout): it comes back when that claim is stale
    and builds the export then, if it is still not done."""
    built = export.build(export_id)
    if built is not None:
        return built.status
    wait = export.stale_in(export_id)
    if wait is not None and not self.request.is_eager:
        raise self.retry(countdown=wait + 1)
    return "skipped"


@shared_task
def delete_expired_exports() -> int:
    return export.delete_expired()


@shared_task
def list_retention_due() -> int:
    """Periodic: list patients past retention for an admin to review. Deletes nothing."""
    return len(retention.list_due())


@shared_task(acks_late=True)
def delete_pending_blobs(tombstone_id: int | None = None) -> int:
    """After a purge commits (and periodically): delete its files; failures stay listed."""
    _, failed = retention.delete_pending_blobs(tombstone_id)
    return failed
