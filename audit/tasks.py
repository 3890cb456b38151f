"""Celery tasks for the audit trail: thin callers, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from . import read_sessions


@shared_task
def close_read_sessions() -> int:
    """Periodic: write the final count of viewing sessions that went idle."""
    return read_sessions.close_idle()
