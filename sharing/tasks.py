"""Celery tasks for download links: thin callers of the services, given IDs, safe to rerun."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(acks_late=True)
def prepare_link(link_id: int) -> int:
    """Compute the link's missing CRC-32s; a second run finds them known and reads nothing."""
    return services.prepare(link_id)
