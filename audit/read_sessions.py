"""Reads counted per viewing session, so a viewer loading 400 frames of a study writes a
handful of chained entries instead of 400, and a frame does not wait for the chain lock.

The first allowed read of a study by a caller opens a session: a chained entry (who, the
first object read, why the policy allowed it) and a :class:`~audit.models.ReadSession` row.
Reads after that, each within ``AUDIT_READ_SESSION_SECONDS`` of the previous one, add to the
row's count and last-read time with one UPDATE and no chain lock. The session closes at the
caller's next read after the window, or when :func:`close_idle` runs (``manage.py
close_read_sessions``, and Celery beat); closing writes the final count as a chained entry,
and from then on the total is tamper-evident. Until then it is only as trustworthy as the
database: that is what a frame costing one UPDATE buys.

Refusals, unknown objects and break-the-glass reads are never counted here: each is its own
chained entry (``imaging.access``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from .models import AuditAction, Outcome, ReadSession
from .trail import Actor, Target, record

CLOSE_BATCH = 100


def caller_of(actor: Actor) -> str:
    """Whose session a read counts on: a portal user, a DICOM peer, or else who and where."""
    if actor.user_id is not None:
        return f"user:{actor.user_id}"
    if actor.peer_ae:
        return f"peer:{actor.peer_ae}@{actor.ip}"
    return f"{actor.username or 'anonymous'}@{actor.ip}"


def window() -> timedelta:
    return timedelta(seconds=settings.AUDIT_READ_SESSION_SECONDS)


def record_read(
    action: AuditAction | str, actor: Actor, target: Target, *, caller: str = "",
    reason: str = "", detail: dict[str, Any] | None = None,
) -> None:
    """Put one allowed read of ``target`` on the trail, counted on the caller's session.

    ``caller`` names the session's owner when the actor does not (a share link).
    """
    if window() <= timedelta(0) or not target.study_uid:
        record(action, actor, target, Outcome.ALLOWED, reason=reason, detail=detail)
        return
    now = timezone.now()
    key = (caller or caller_of(actor), str(action), target.study_uid)
    sessions = ReadSession.objects.filter(caller=key[0], action=key[1], study_uid=key[2],
                                          closed_seq=None)
    if _count(sessions, key, now):
        return
    try:
        with transaction.atomic():
            _close_stale_and_open(sessions, action, actor, target, caller, now, reason, detail)
    except IntegrityError:
        # A concurrent read opened the session between our look and our insert (and took
        # our chained entry back with its transaction): count on that session instead.
        if not sessions.update(reads=F("reads") + 1, last_read=now):
            record(action, actor, target, Outcome.ALLOWED, reason=reason, detail=detail)


def _count(sessions: Any, key: tuple[str, str, str], now: datetime) -> bool:
    """Add one read to the caller's open session if it is still within the window.

    On PostgreSQL the UPDATE, when it runs on its own (autocommit), does not wait for its
    WAL to reach the disk (``synchronous_commit`` off for that one transaction): the wait
    is about a millisecond, more than the rest of a frame's audit. A database server crash
    can then lose the last fraction of a second of counts; the session's opening entry
    (who, what, why) is chained and committed durably, and the count is only as
    trustworthy as the database until the closing entry chains it anyway.
    """
    fresh = sessions.filter(last_read__gte=now - window())
    if connection.vendor != "postgresql" or not connection.get_autocommit():
        return bool(fresh.update(reads=F("reads") + 1, last_read=now))
    # The ORM's UPDATE of ``fresh``, spelled out for the one-statement asynchronous commit:
    # plain conditions on the row, so a session closed meanwhile is re-checked and skipped.
    sql = (
        "WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true)) "
        "UPDATE audit_readsession SET reads = reads + 1, last_read = %s FROM async_commit "
        "WHERE caller = %s AND action = %s AND study_uid = %s AND closed_seq IS NULL "
        "AND last_read >= %s")
    assert ReadSession._meta.db_table == "audit_readsession"
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, *key, now - window()])
        return bool(cursor.rowcount)


def _close_stale_and_open(
    sessions: Any, action: AuditAction | str, actor: Actor, target: Target, caller: str,
    now: datetime, reason: str, detail: dict[str, Any] | None,
) -> None:
    stale = sessions.select_for_update().first()
    if stale is not None:
        if stale.last_read >= now - window():  # opened by a concurrent read meanwhile
            ReadSession.objects.filter(pk=stale.pk).update(reads=F("reads") + 1, last_read=now)
            return
        _close(stale)
    (entry,) = record(action, actor, target, Outcome.ALLOWED, reason=reason,
                      detail={**(detail or {}), "read_session": "opened"})
    ReadSession.objects.create(
        caller=caller or caller_of(actor), action=str(action), study_uid=target.study_uid,
        patient_pk=target.patient_pk, patient_ref=target.patient_ref, user_pk=actor.user_id,
        username=actor.username[:150], role=actor.role[:32], peer_ae=actor.peer_ae,
        ip=actor.ip, client=actor.client, opened=now, last_read=now, reads=1,
        opened_seq=entry.seq,
    )


def _close(session: ReadSession) -> None:
    """Write the session's final count as a chained entry; the caller holds its row lock."""
    actor = Actor(user_id=session.user_pk, username=session.username, role=session.role,
                  peer_ae=session.peer_ae, ip=session.ip, client=session.client)
    target = Target("study", session.study_uid, session.patient_pk, session.patient_ref,
                    session.study_uid)
    (entry,) = record(session.action, actor, target, Outcome.ALLOWED, detail={
        "read_session": {"closed": True, "reads": session.reads, "opened_seq":
                         session.opened_seq, "opened": session.opened.isoformat(),
                         "last_read": session.last_read.isoformat()},
    })
    ReadSession.objects.filter(pk=session.pk).update(closed_seq=entry.seq)


def close_idle(now: datetime | None = None) -> int:
    """Close every session idle for longer than the window; how many were closed."""
    since = (now or timezone.now()) - window()
    closed = 0
    while True:
        with transaction.atomic():
            batch = list(ReadSession.objects.select_for_update(skip_locked=True)
                         .filter(closed_seq=None, last_read__lt=since)
                         .order_by("pk")[:CLOSE_BATCH])
            for session in batch:
                _close(session)
        closed += len(batch)
        if len(batch) < CLOSE_BATCH:
            return closed


def opened_by(seqs: list[int]) -> dict[int, ReadSession]:
    """The sessions that the entries numbered ``seqs`` opened, by that number."""
    return {s.opened_seq: s for s in ReadSession.objects.filter(opened_seq__in=seqs)}


def of_patient(patient_pk: int) -> dict[int, ReadSession]:
    """Every viewing session of a patient's data, by the number of the entry that opened it."""
    return {s.opened_seq: s for s in ReadSession.objects.filter(patient_pk=patient_pk)}
