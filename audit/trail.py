"""The one audit call: :func:`record`. Every read and write of patient data ends here.

Entries are appended under a lock on the chain head, so the hash chain has one order even
with many web workers, DICOM associations and Celery workers writing at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils import timezone

from ops.metrics import timed_audit_write
from portal.client_address import client_address

from . import chain
from .models import AuditAction, AuditCheckpoint, AuditEvent, ChainHead, Outcome

if TYPE_CHECKING:
    from django.http import HttpRequest

    from imaging.models import Instance, Patient, Series, Study


@dataclass(frozen=True)
class Actor:
    """Who acted: a portal user (with where from) or a DICOM peer."""

    user_id: int | None = None
    username: str = ""
    role: str = ""
    peer_ae: str = ""
    ip: str = ""
    client: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        user = getattr(request, "user", None)
        authenticated = bool(user is not None and user.is_authenticated)
        return cls(
            user_id=user.pk if authenticated and user is not None else None,
            username=user.get_username() if authenticated and user is not None else "",
            role=str(getattr(user, "role", "")) if authenticated else "",
            ip=client_address(request)[:64],
            client=str(request.META.get("HTTP_USER_AGENT", ""))[:256],
        )

    @classmethod
    def for_user(cls, user: Any, *, ip: str = "", client: str = "") -> Actor:
        return cls(user_id=user.pk, username=user.get_username(),
                   role=str(getattr(user, "role", "")), ip=ip, client=client)

    @classmethod
    def peer(cls, ae_title: str, host: str, port: int | None = None) -> Actor:
        return cls(peer_ae=ae_title.strip()[:16], ip=host[:64], client=f"{host}:{port or ''}",
                   role="peer")

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(username=name, role="system")


@dataclass(frozen=True)
class Target:
    """What was touched, as plain values that outlive the rows."""

    level: str = ""
    uid: str = ""
    patient_pk: int | None = None
    patient_ref: str = ""
    study_uid: str = ""

    @classmethod
    def patient(cls, patient: Patient) -> Target:
        return cls("patient", patient.patient_id, patient.pk, _ref(patient))

    @classmethod
    def study(cls, study: Study) -> Target:
        return cls("study", study.study_instance_uid, study.patient_id, _ref(study.patient),
                   study.study_instance_uid)

    @classmethod
    def series(cls, series: Series) -> Target:
        study = series.study
        return cls("series", series.series_instance_uid, study.patient_id, _ref(study.patient),
                   study.study_instance_uid)

    @classmethod
    def instance(cls, instance: Instance) -> Target:
        study = instance.series.study
        return cls("instance", instance.sop_instance_uid, study.patient_id,
                   _ref(study.patient), study.study_instance_uid)


def _ref(patient: Patient) -> str:
    return f"{patient.patient_id}^{patient.issuer}" if patient.issuer else patient.patient_id


def record(
    action: AuditAction | str,
    actor: Actor,
    targets: Target | Sequence[Target] | None = None,
    outcome: Outcome | str = Outcome.ALLOWED,
    *,
    reason: str = "",
    break_glass: bool = False,
    detail: dict[str, Any] | None = None,
) -> list[AuditEvent]:
    """Append one entry per target (one entry when there is none) to the audit trail."""
    if targets is None:
        target_list: Sequence[Target] = [Target()]
    elif isinstance(targets, Target):
        target_list = [targets]
    else:
        target_list = targets or [Target()]
    now = timezone.now()
    with timed_audit_write(), transaction.atomic():
        head = _locked_head()
        events, checkpoints = [], []
        for target in target_list:
            fields: dict[str, Any] = {
                "seq": head.seq + 1,
                "at": now,
                "user_pk": actor.user_id,
                "username": actor.username[:150],
                "role": actor.role[:32],
                "peer_ae": actor.peer_ae,
                "ip": actor.ip,
                "client": actor.client,
                "action": str(action),
                "outcome": str(outcome),
                "level": target.level,
                "object_uid": target.uid[:128],
                "patient_pk": target.patient_pk,
                "patient_ref": target.patient_ref[:140],
                "study_uid": target.study_uid,
                "break_glass": break_glass,
                "reason": reason,
                "detail": detail or {},
            }
            digest = chain.entry_hash(head.entry_hash, fields)
            events.append(AuditEvent(**fields, prev_hash=head.entry_hash, entry_hash=digest))
            head.seq, head.entry_hash = fields["seq"], digest
            if head.seq % chain.CHECKPOINT_EVERY == 0:
                checkpoints.append(AuditCheckpoint(seq=head.seq, entry_hash=digest, at=now,
                                                   signature=chain.sign(head.seq, digest)))
        signature = chain.sign(head.seq, head.entry_hash)
        if connection.vendor == "postgresql":
            _append_in_one_statement(events, checkpoints, head, signature)
        else:
            _append(events, checkpoints, head, signature)
    return events


def _locked_head() -> ChainHead:
    """The chain head, locked until the transaction ends (on SQLite the transaction's
    write lock is the lock: it begins IMMEDIATE). Read with one plain statement: the
    ORM's locking get_or_create cost an append a fifth of its time."""
    table = connection.ops.quote_name(ChainHead._meta.db_table)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT seq, entry_hash FROM {table} WHERE id = 1{lock}")  # noqa: S608
        row = cursor.fetchone()
    if row is None:  # the very first entry
        head, _ = ChainHead.objects.select_for_update().get_or_create(pk=1)
        return head
    return ChainHead(pk=1, seq=row[0], entry_hash=row[1])


def _append(events: list[AuditEvent], checkpoints: list[AuditCheckpoint], head: ChainHead,
            signature: str) -> None:
    """The entries, their checkpoints and the new head in three plain statements (the
    ORM's bulk_create and update took most of an append's time on SQLite)."""
    insert, params = _insert_sql(events)
    with connection.cursor() as cursor:
        cursor.execute(f"{insert} RETURNING seq, id", params)  # in no promised order
        pks = dict(cursor.fetchall())
        _set_pks(events, [(pks[event.seq],) for event in events])
        if checkpoints:
            cursor.execute(*_insert_sql(checkpoints))
        table = connection.ops.quote_name(ChainHead._meta.db_table)
        cursor.execute(f"UPDATE {table} SET seq = %s, entry_hash = %s, "  # noqa: S608
                       "signature = %s WHERE id = 1",
                       [head.seq, head.entry_hash, signature])


def _set_pks(events: list[AuditEvent], rows: Sequence[Any]) -> None:
    for event, (pk,) in zip(events, rows, strict=True):
        event.pk = pk
        event._state.adding = False
        event._state.db = connection.alias


def _insert_sql(objs: Sequence[AuditEvent | AuditCheckpoint]) -> tuple[str, list[Any]]:
    """``INSERT INTO ... VALUES (...), ...`` of ``objs`` (one model), values prepared by
    their fields as the ORM prepares them. Only quoted names from the model's own
    metadata go into the text; every value is a parameter."""
    meta = objs[0]._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [f.get_db_prep_save(getattr(obj, f.attname), connection)
              for obj in objs for f in fields]
    table = connection.ops.quote_name(meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(objs))}"  # noqa: S608
    return sql, params


def _append_in_one_statement(events: list[AuditEvent], checkpoints: list[AuditCheckpoint],
                             head: ChainHead, signature: str) -> None:
    """The entries, their checkpoints and the new head in one statement (PostgreSQL's
    data-modifying CTEs): with the head's locking read before it and the commit after, an
    append is three round trips instead of one per table."""
    insert, params = _insert_events_unnested(events)
    parts = [f"new_events AS ({insert} RETURNING seq, id)"]
    if checkpoints:
        insert_checkpoints, checkpoint_params = _insert_sql(checkpoints)
        parts.append(f"new_checkpoints AS ({insert_checkpoints})")
        params += checkpoint_params
    table = connection.ops.quote_name(ChainHead._meta.db_table)
    parts.append(f"new_head AS (UPDATE {table} SET seq = %s, entry_hash = %s, "  # noqa: S608
                 "signature = %s WHERE id = 1)")
    params += [head.seq, head.entry_hash, signature]
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT seq, id FROM new_events",  # noqa: S608
                       params)
        pks = dict(cursor.fetchall())
        _set_pks(events, [(pks[event.seq],) for event in events])


# What differs between the entries of one record() call (one per target); the rest is the
# same for all of them.
_PER_TARGET = frozenset({"seq", "level", "object_uid", "patient_pk", "patient_ref",
                         "study_uid", "prev_hash", "entry_hash"})


def _insert_events_unnested(events: Sequence[AuditEvent]) -> tuple[str, list[Any]]:
    """``INSERT ... SELECT`` of one record() call's entries: what they share as one
    parameter each, what differs per target as one array per column (PostgreSQL's
    ``unnest``). A search answering a hundred patients wrote a hundred rows of twenty
    parameters: a statement of 2,000 placeholders that psycopg parsed anew each time (too
    long for its cache), 17 ms an entry. The text now depends on nothing but the model."""
    fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    shared = [f for f in fields if f.attname not in _PER_TARGET]
    varying = [f for f in fields if f.attname in _PER_TARGET]
    first = events[0]
    for event in events[1:]:  # record() builds them so; a change there must not go unseen
        assert all(getattr(event, f.attname) == getattr(first, f.attname) for f in shared)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in (*shared, *varying))
    names = ", ".join(f"c{i}" for i in range(len(varying)))
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in varying)
    values = ", ".join(["%s"] * len(shared) + [f"u.c{i}" for i in range(len(varying))])
    table = quote(AuditEvent._meta.db_table)
    sql = (f"INSERT INTO {table} ({columns}) SELECT {values} "  # noqa: S608
           f"FROM unnest({arrays}) AS u({names})")
    params: list[Any] = [f.get_db_prep_save(getattr(first, f.attname), connection)
                         for f in shared]
    params += [[f.get_db_prep_save(getattr(event, f.attname), connection) for event in events]
               for f in varying]
    return sql, params


def first_broken_link(key: bytes | None = None) -> chain.BrokenLink | None:
    """Walk the whole trail; also catch entries cut off its end, and a chain rebuilt by
    someone who could write to the database but did not hold the chain key (``key``, by
    default the configured one)."""
    head, _ = ChainHead.objects.get_or_create(pk=1)
    checkpoints: dict[int, str] = {}
    for seq, digest, signature in AuditCheckpoint.objects.values_list(
            "seq", "entry_hash", "signature"):
        if not chain.signed(seq, digest, signature, key):
            return chain.BrokenLink(seq, "its checkpoint is not signed with the chain key")
        checkpoints[seq] = digest
    fields = (*chain.CHAINED_FIELDS, "prev_hash", "entry_hash")
    entries = AuditEvent.objects.order_by("seq").values(*fields).iterator(chunk_size=2000)
    broken = chain.verify(entries, checkpoints)
    if broken is not None:
        return broken
    last = AuditEvent.objects.order_by("-seq").values_list("seq", "entry_hash").first()
    last_seq, last_hash = last if last else (0, chain.GENESIS)
    if (head.seq, head.entry_hash) != (last_seq, last_hash):
        return chain.BrokenLink(last_seq + 1, "entries after this point were removed")
    every = chain.CHECKPOINT_EVERY
    missing = next((n for n in range(every, last_seq + 1, every) if n not in checkpoints), None)
    if missing is not None:
        return chain.BrokenLink(missing, "its signed checkpoint is missing")
    if last_seq and not chain.signed(head.seq, head.entry_hash, head.signature, key):
        return chain.BrokenLink(last_seq, "the chain head's signature does not match the "
                                          "chain key (rebuilt without the key?)")
    return None


def sign_with_current_key() -> None:
    """Sign the head and every checkpoint again with the configured key (after the key was
    changed; ``manage.py verify_audit --resign-from-env``, which checks the old one first)."""
    with transaction.atomic():
        head, _ = ChainHead.objects.select_for_update().get_or_create(pk=1)
        for seq, digest in AuditCheckpoint.objects.values_list("seq", "entry_hash"):
            AuditCheckpoint.objects.filter(seq=seq).update(signature=chain.sign(seq, digest))
        ChainHead.objects.filter(pk=1).update(signature=chain.sign(head.seq, head.entry_hash))
