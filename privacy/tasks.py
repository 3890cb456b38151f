"""Celery tasks for LGPD work: thin callers of the services, given IDs, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from . import export, retention


@shared_task(acks_late=True)
def build_export(export_id: int) -> str:
    """Build one data export; the service claims it, so a second run does nothing."""
    built = export.build(export_id)
    return built.status if built is not None else "skipped"


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
