"""Celery tasks of results out: thin callers of :mod:`orders.results` that take ids and
may run twice (a delivered message is left alone; one another worker holds is skipped)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import results


@shared_task(bind=True, max_retries=None)
def send_result(self: Any, message_id: int) -> str:
    """One attempt; after a failure, another once the message's backoff has passed, until
    the message is delivered or failed (``HL7_RESULTS_MAX_ATTEMPTS`` counts the attempts on
    the row, so a message sent by several tasks still stops there). The sweep takes over
    whatever a lost task leaves."""
    attempt = results.send(message_id)
    if attempt.next_id is not None:  # the study's next version, which waited for this one
        routing = (self.request.delivery_info or {}).get("routing_key")
        if routing:
            send_result.apply_async((attempt.next_id,), queue=routing)
        else:
            send_result.delay(attempt.next_id)
    if (attempt.outcome == results.Sent.PENDING and attempt.retry_in is not None
            and not self.request.is_eager):
        # A second after the wait, so the row is due when the retry runs.
        raise self.retry(countdown=attempt.retry_in + 1)
    return attempt.outcome.value


@shared_task
def sweep_results(limit: int = 1000) -> int:
    """The periodic sweep (CELERY_BEAT_SCHEDULE): queue a send for every message due."""
    return results.sweep(limit)
